"""Alerts: which alerts should be open (pure functions, with hysteresis), and the Redis-backed
book of open alerts that every API process shares.

Levels of a reserve's utilization alert: warning (>= 75 %), critical (>= 90 %), emergency
(>= 95 %). Once raised, a level holds until utilization falls `hysteresis_pct` points below its
threshold, so a reserve hovering around a threshold raises one alert, not one per crossing. A
floor alert opens when the available balance falls below the currency's configured floor and
clears once it is back above the floor plus `floor_hysteresis_pct` percent. System alerts
(persister lag, 5xx error rate, refusal rate, p99 latency) come from a MetricsSnapshot, are
judged against config.Thresholds (the bounds of limits.py unless overridden), say nothing on
fewer requests than their minimum, and clear below `system_clear_share_pct` percent of their
threshold. All comparisons are exact integers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from engine.keys import KeySpace
from engine.monitoring import limits, metrics
from engine.monitoring.config import Thresholds
from engine.money import from_minor, json_number
from engine.ops import wall_clock_ms
from engine.types import Balance

# (level, threshold percent), lowest first.
UTILIZATION_LEVELS: tuple[tuple[str, int], ...] = (
    ("warning", limits.warning_pct),
    ("critical", limits.critical_pct),
    ("emergency", limits.emergency_pct),
)
SYSTEM_ACCOUNT = "SYSTEM"

# Every kind an alert can have: the monitor's own, and those raised by other parts (flows).
# The API's schema of an alert takes its enum from here.
ALERT_KINDS = ("utilization", "floor", "persister_lag", "error_rate", "refusal_rate",
               "latency_p99", "flow_flagged", "liquidity_request", "liquidity_flagged")


@dataclass(frozen=True, slots=True)
class Wanted:
    """An alert that should be open now."""

    account: str
    kind: str  # one of ALERT_KINDS
    level: str
    message: str
    value: str = ""

    @property
    def key(self) -> str:
        return f"{self.account}|{self.kind}"


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """What the API measured; None: not measured (the alert keeps its state)."""

    persister_lag_ms: int | None = None
    requests_count: int | None = None
    errors_count: int | None = None  # 5xx answers among requests_count
    latency_p99_ms: int | None = None
    money_requests_count: int | None = None  # requests of the money routes
    refusals_count: int | None = None  # their 409 answers


def utilization_level(locked_minor: int, total_minor: int, open_level: str | None,
                      hysteresis_pct: int = limits.hysteresis_pct) -> str | None:
    """The level that should be open: the highest one whose threshold utilization reaches, or
    one at or below the open level whose threshold minus the hysteresis it still reaches."""
    if total_minor <= 0:
        return None
    scaled = locked_minor * 100
    open_rank = [name for name, _ in UTILIZATION_LEVELS].index(open_level) if open_level else -1
    level: str | None = None
    for rank, (name, threshold_pct) in enumerate(UTILIZATION_LEVELS):
        if scaled >= threshold_pct * total_minor:
            level = name
        elif rank <= open_rank and scaled >= (threshold_pct - hysteresis_pct) * total_minor:
            level = name
    return level


def floor_breached(available_minor: int, floor_minor: int, is_open: bool,
                   hysteresis_pct: int = limits.floor_hysteresis_pct) -> bool:
    if floor_minor <= 0:
        return False
    if is_open:
        return available_minor * 100 < floor_minor * (100 + hysteresis_pct)
    return available_minor < floor_minor


def _above(value: int, threshold: int, is_open: bool) -> bool:
    """value > threshold to open; stays open while value > share of threshold."""
    if is_open:
        return value * 100 > threshold * limits.system_clear_share_pct
    return value > threshold


def reserve_alerts(balance: Balance, floor_minor: int, open_levels: Mapping[str, str]) -> list[Wanted]:
    """The alerts one reserve should have open; open_levels: alert key -> open level."""
    label = balance.account.label
    code = balance.account.currency.code
    wanted: list[Wanted] = []
    level = utilization_level(balance.locked_minor, balance.total_minor,
                              open_levels.get(f"{label}|utilization"))
    if level is not None:
        pct = balance.utilization_percentage
        threshold = dict(UTILIZATION_LEVELS)[level]
        wanted.append(Wanted(label, "utilization", level,
                             f"{code} reserve utilization {pct}% (>= {threshold}%: {level})",
                             str(pct)))
    if floor_breached(balance.available_minor, floor_minor, f"{label}|floor" in open_levels):
        available = json_number(balance.major(balance.available_minor))
        floor = json_number(balance.major(floor_minor))
        wanted.append(Wanted(label, "floor", "critical",
                             f"{code} reserve available balance {available} is below the floor "
                             f"{floor}", available))
    return wanted


def system_alerts(snapshot: MetricsSnapshot, open_levels: Mapping[str, str],
                  thresholds: Thresholds | None = None) -> tuple[list[Wanted], set[str]]:
    """(alerts that should be open, kinds the snapshot measured). A kind not measured keeps
    whatever state it has; a rate on fewer requests than its minimum is measured and wants no
    alert (a lone slow or refused request says nothing yet)."""
    t = thresholds or Thresholds()
    wanted: list[Wanted] = []
    measured: set[str] = set()

    def is_open(kind: str) -> bool:
        return f"{SYSTEM_ACCOUNT}|{kind}" in open_levels

    if snapshot.persister_lag_ms is not None:
        measured.add("persister_lag")
        lag_ms, max_ms = snapshot.persister_lag_ms, t.persister_lag_s_max * 1000
        if _above(lag_ms, max_ms, is_open("persister_lag")):
            wanted.append(Wanted(SYSTEM_ACCOUNT, "persister_lag", "critical",
                                 f"persister lag {from_minor(lag_ms, 3)} s exceeds "
                                 f"{t.persister_lag_s_max} s", str(lag_ms)))
    if snapshot.requests_count is not None and snapshot.errors_count is not None:
        measured.add("error_rate")
        requests, errors = snapshot.requests_count, snapshot.errors_count
        if requests >= t.error_rate_requests_min and _above(
                errors * 100, t.error_rate_pct_max * requests, is_open("error_rate")):
            wanted.append(Wanted(SYSTEM_ACCOUNT, "error_rate", "critical",
                                 f"error rate {errors}/{requests} requests exceeds "
                                 f"{t.error_rate_pct_max}%", f"{errors}/{requests}"))
    if snapshot.money_requests_count is not None and snapshot.refusals_count is not None:
        measured.add("refusal_rate")
        requests, refusals = snapshot.money_requests_count, snapshot.refusals_count
        if requests >= t.refusal_rate_requests_min and _above(
                refusals * 100, t.refusal_rate_pct_max * requests, is_open("refusal_rate")):
            wanted.append(Wanted(SYSTEM_ACCOUNT, "refusal_rate", "warning",
                                 f"refusal rate {refusals}/{requests} money requests exceeds "
                                 f"{t.refusal_rate_pct_max}%", f"{refusals}/{requests}"))
    if snapshot.latency_p99_ms is not None:
        measured.add("latency_p99")
        p99_ms = snapshot.latency_p99_ms
        if (snapshot.requests_count or 0) >= t.latency_requests_min and _above(
                p99_ms, t.latency_p99_ms_max, is_open("latency_p99")):
            wanted.append(Wanted(SYSTEM_ACCOUNT, "latency_p99", "warning",
                                 f"p99 latency {p99_ms} ms over {snapshot.requests_count} "
                                 f"requests exceeds {t.latency_p99_ms_max} ms", str(p99_ms)))
    return wanted, measured


@dataclass(frozen=True, slots=True)
class Transition:
    action: str  # raise | clear
    key: str
    wanted: Wanted | None  # None for a clear


def plan(open_levels: Mapping[str, str], wanted: Iterable[Wanted],
         evaluated: Callable[[str], bool]) -> list[Transition]:
    """Raises for wanted alerts not open at that level; clears for open alerts that are no
    longer wanted, among the keys this evaluation covered (evaluated(key))."""
    by_key = {w.key: w for w in wanted}
    out = [Transition("raise", k, w) for k, w in by_key.items() if open_levels.get(k) != w.level]
    out += [Transition("clear", k, None) for k in open_levels if k not in by_key and evaluated(k)]
    return out


# -- the shared book of open alerts (Redis) ------------------------------------------------------

_SCRIPT = resources.files("engine.monitoring").joinpath("alert.lua").read_text(encoding="utf-8")


@dataclass
class AlertBook:
    """Open alerts and their history in Redis (shard 0's hash tag), raised and cleared through
    one script, so several API processes agree and each transition is journalled once."""

    client: Any
    keys: KeySpace
    clock_ms: Callable[[], int] = wall_clock_ms
    on_transition: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._script = self.client.register_script(_SCRIPT)
        tag = self.keys.tag(0)
        self.active_key = f"{tag}:alerts"
        self.history_key = f"{tag}:alerts:history"

    async def open_alerts(self) -> list[dict[str, Any]]:
        raw = await self.client.hgetall(self.active_key)
        return sorted((json.loads(v) for v in raw.values()), key=lambda r: int(r["id"]))

    async def history(self, count: int = limits.history_count_max) -> list[dict[str, Any]]:
        count = max(1, min(count, limits.history_count_max))
        return [json.loads(v) for v in await self.client.lrange(self.history_key, 0, count - 1)]

    async def open_levels(self) -> dict[str, str]:
        return {r["key"]: r["level"] for r in await self.open_alerts()}

    async def apply(self, transitions: Iterable[Transition]) -> list[dict[str, Any]]:
        """Run each transition; returns the ones this process applied (others were first)."""
        applied: list[dict[str, Any]] = []
        for t in transitions:
            record = ""
            if t.wanted is not None:
                w = t.wanted
                record = json.dumps({"account": w.account, "kind": w.kind, "level": w.level,
                                     "message": w.message, "value": w.value})
            code, event_id, replaced_id = await self._script(
                keys=[self.active_key, self.history_key, self.keys.stream(0), self.keys.seq(0)],
                args=[self.clock_ms(), 1, self.keys.shard_count, t.action, t.key, record,
                      limits.history_count_max])
            if int(code) != 0:
                continue
            event: dict[str, Any] = {"action": t.action, "key": t.key,
                                     "event_id": int(event_id)}
            if int(replaced_id):
                event["replaces_event_id"] = int(replaced_id)
            if t.wanted is not None:
                event.update(account=t.wanted.account, kind=t.wanted.kind,
                             level=t.wanted.level, message=t.wanted.message)
            else:
                event.update(account=t.key.split("|", 1)[0], kind=t.key.split("|", 1)[1])
            metrics.alert_transitions.labels(t.action, event["kind"]).inc()
            applied.append(event)
            for callback in self.on_transition:
                callback(event)
        return applied

    async def evaluate(self, balances: Iterable[Balance], floors_minor: Mapping[str, int],
                       snapshot: MetricsSnapshot | None = None,
                       thresholds: Thresholds | None = None) -> list[dict[str, Any]]:
        """Compare every reserve (and the snapshot) with the open alerts; raise and clear."""
        open_levels = await self.open_levels()
        wanted: list[Wanted] = []
        covered: set[str] = set()
        for balance in balances:
            covered.add(balance.account.label)
            floor = floors_minor.get(balance.account.currency.code, 0)
            wanted += reserve_alerts(balance, floor, open_levels)
        measured: set[str] = set()
        if snapshot is not None:
            system, measured = system_alerts(snapshot, open_levels, thresholds)
            wanted += system

        def evaluated(key: str) -> bool:
            account, kind = key.split("|", 1)
            return account in covered or (account == SYSTEM_ACCOUNT and kind in measured)

        applied = await self.apply(plan(open_levels, wanted, evaluated))
        metrics.set_open_alerts(await self.open_alerts())
        return applied
