"""Latency samples and the figures reported from them (benchmark figures, not money: floats)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PERCENTILES = (50.0, 99.0, 99.9)


def percentile_ms(sorted_ns: list[int], pct: float) -> float:
    if not sorted_ns:
        return 0.0
    index = min(len(sorted_ns) - 1, round(pct / 100 * (len(sorted_ns) - 1)))
    return sorted_ns[index] / 1e6


@dataclass
class Cell:
    """One measured configuration: its throughput, latencies and invariant checks."""

    scenario: str
    label: str
    clients: int
    accounts: int = 1
    ops: int = 0
    duration_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    reserve_p99_ms: float = 0.0
    errors: int = 0
    violations: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # kept out of results.json: a few hundred thousand samples
    samples_ns: list[int] = field(default_factory=list, repr=False)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.violations and self.errors == 0

    def set_latencies(self, samples_ns: list[int], reserve_ns: list[int] | None = None) -> None:
        samples_ns.sort()
        self.samples_ns = samples_ns
        self.p50_ms, self.p99_ms, self.p999_ms = (percentile_ms(samples_ns, p)
                                                 for p in PERCENTILES)
        if reserve_ns is not None:
            reserve_ns.sort()
            self.reserve_p99_ms = percentile_ms(reserve_ns, 99.0)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("samples_ns")
        data["ops_per_s"] = round(self.ops_per_s, 1)
        data["ok"] = self.ok
        return data
