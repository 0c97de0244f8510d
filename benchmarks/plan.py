"""What one benchmark run measures and for how long: the full run, --quick, and the tiny plan
the tests use. Every duration and count is bounded here, with its unit in the name."""

from __future__ import annotations

from dataclasses import dataclass, replace

SCENARIOS = ("engine", "baseline", "limit", "http", "persister", "cluster", "paired")


@dataclass(frozen=True)
class Plan:
    name: str
    scenarios: tuple[str, ...] = SCENARIOS
    clients_counts: tuple[int, ...] = (1, 16, 64, 256)
    accounts_counts: tuple[int, ...] = (1, 1000)
    cycles: tuple[str, ...] = ("commit", "release")
    # One cell (scenario x clients x accounts x cycle): warm-up, then the measured window.
    warmup_s: float = 0.5
    cell_s: float = 4.0
    # The engine with batching off, for comparison (hot account, commit cycle).
    unbatched_clients_counts: tuple[int, ...] = (1, 64)
    # A long-running engine (hot account, commit cycle): a warm-up long enough that the
    # in-process caches are full (engine/limits.py), so their eviction is in the measured window.
    steady_clients_counts: tuple[int, ...] = (64,)
    steady_warmup_s: float = 8.0
    # redis-benchmark: requests per run are rate_guess x limit_s, capped.
    limit_s: float = 3.0
    limit_requests_max: int = 400_000
    limit_pipeline: int = 16
    http_workers_counts: tuple[int, ...] = (1, 2)
    http_clients_counts: tuple[int, ...] = (1, 16, 64, 256)
    http_s: float = 4.0
    persister_s: float = 8.0
    persister_sample_s: float = 0.5
    drain_timeout_s: float = 300.0
    cluster_masters_counts: tuple[int, ...] = (1, 2, 3)
    cluster_clients: int = 64
    cluster_accounts: int = 1000
    cluster_s: float = 4.0
    profile_s: float = 4.0  # py-spy on the engine at 64 clients, hot account (0: off)
    # The targets' engine cell and ceiling back to back, this many rounds (benchmarks/paired.py).
    paired_rounds: int = 5
    paired_cell_s: float = 3.0
    # Balance of each account: enough that no cycle is ever refused (1 minor unit per hold).
    balance_minor: int = 10**12
    # The `bench` extra (uvloop, matplotlib) is required: the figures are measured on uvloop.
    bench_extra: bool = True


FULL = Plan("full")
QUICK = Plan(
    "quick", clients_counts=(1, 64), cycles=("commit",), warmup_s=0.3, cell_s=1.5,
    unbatched_clients_counts=(64,), steady_clients_counts=(), limit_s=1.0, http_workers_counts=(1,),
    http_clients_counts=(64,), http_s=2.0, persister_s=4.0, drain_timeout_s=120.0,
    cluster_masters_counts=(1, 3), cluster_s=1.5, profile_s=0.0, paired_rounds=3,
    paired_cell_s=1.5,
)
# For the tests: seconds, no external load generators.
TINY = Plan(
    "tiny", scenarios=("engine", "baseline", "persister"), clients_counts=(1, 4),
    accounts_counts=(1, 3), cycles=("commit", "release"), warmup_s=0.0, cell_s=0.3,
    unbatched_clients_counts=(), steady_clients_counts=(), persister_s=1.0, persister_sample_s=0.2, drain_timeout_s=30.0,
    profile_s=0.0, balance_minor=10**9, bench_extra=False,
)
PLANS = {"full": FULL, "quick": QUICK, "tiny": TINY}


def select(plan: Plan, scenarios: tuple[str, ...] | None) -> Plan:
    if not scenarios:
        return plan
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(SCENARIOS)}")
    return replace(plan, scenarios=tuple(s for s in SCENARIOS if s in scenarios))
