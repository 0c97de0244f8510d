"""Alerts: levels with hysteresis (pure), floors, system alerts, and the shared book of open
alerts in Redis (raised once, cleared on recovery, journalled) on fakeredis and the real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.engine import ReserveEngine
from engine.journal import JournalEvent
from engine.monitoring.alerts import (
    AlertBook,
    MetricsSnapshot,
    floor_breached,
    system_alerts,
    utilization_level,
)
from engine.monitoring.config import MonitorConfig, Thresholds
from tests.engine_helpers import START_MS, Clock


def _walk(path_pct: list[int]) -> list[str | None]:
    """The open level after each step of a utilization path (locked of a total of 1000)."""
    level: str | None = None
    levels = []
    for pct in path_pct:
        level = utilization_level(pct * 10, 1000, level)
        levels.append(level)
    return levels


def test_levels_rise_at_their_thresholds() -> None:
    assert _walk([0, 74, 75, 89, 90, 94, 95, 100]) == [
        None, None, "warning", "warning", "critical", "critical", "emergency", "emergency"]


def test_no_flapping_around_a_threshold() -> None:
    # Hovering around 75 % opens one warning and keeps it until utilization is below 70 %.
    assert _walk([74, 75, 74, 76, 71, 70, 75, 69, 74, 75]) == [
        None, "warning", "warning", "warning", "warning", "warning", "warning", None, None,
        "warning"]


def test_levels_step_down_through_their_own_hysteresis() -> None:
    # From emergency: 91 % keeps emergency (>= 90), 89 % is critical (>= 85), 84 % warning,
    # 69 % nothing.
    assert _walk([96, 91, 89, 86, 84, 72, 69]) == [
        "emergency", "emergency", "critical", "critical", "warning", "warning", None]


def test_level_is_exact_at_the_boundary() -> None:
    # 7499 / 10000 is 74.99 %: not a warning; 7500 is.
    assert utilization_level(7499, 10_000, None) is None
    assert utilization_level(7500, 10_000, None) == "warning"
    # open warning clears strictly below 70 %
    assert utilization_level(7000, 10_000, "warning") == "warning"
    assert utilization_level(6999, 10_000, "warning") is None
    assert utilization_level(0, 0, "warning") is None


def test_floor_with_hysteresis() -> None:
    assert floor_breached(999, 1000, is_open=False)
    assert not floor_breached(1000, 1000, is_open=False)
    assert floor_breached(1049, 1000, is_open=True)  # needs 5 % above the floor to clear
    assert not floor_breached(1050, 1000, is_open=True)
    assert not floor_breached(0, 0, is_open=False)  # no floor configured


def test_system_alerts_from_a_snapshot() -> None:
    snap = MetricsSnapshot(persister_lag_ms=30_001, requests_count=100, errors_count=6,
                           latency_p99_ms=1_001)
    wanted, measured = system_alerts(snap, {})
    assert {w.kind: w.level for w in wanted} == {
        "persister_lag": "critical", "error_rate": "critical", "latency_p99": "warning"}
    assert measured == {"persister_lag", "error_rate", "latency_p99"}
    # exactly at the thresholds: nothing (they are "above" thresholds)
    wanted, _ = system_alerts(MetricsSnapshot(30_000, 100, 5, 1_000), {})
    assert wanted == []
    # open ones stay until below 80 % of the threshold
    open_levels = {"SYSTEM|persister_lag": "critical", "SYSTEM|error_rate": "critical",
                   "SYSTEM|latency_p99": "warning"}
    wanted, _ = system_alerts(MetricsSnapshot(24_001, 100, 5, 801), open_levels)
    assert len(wanted) == 3
    wanted, _ = system_alerts(MetricsSnapshot(24_000, 100, 4, 800), open_levels)
    assert wanted == []
    # too few requests say nothing about the error rate
    wanted, _ = system_alerts(MetricsSnapshot(requests_count=10, errors_count=10), {})
    assert wanted == []


def _window_snapshot(fast_count: int, slow_count: int, refused_count: int = 0) -> MetricsSnapshot:
    """What the API's request window reports after these requests (fast: 1 ms, slow: 2 s)."""
    from api.metrics import Window

    window = Window(clock=lambda: 1_000.0)
    for i in range(fast_count + slow_count):
        status = 409 if i < refused_count else 200
        window.add_response(2.0 if i >= fast_count else 0.001, status, "reserve")
    requests, errors, p99_ms = window.snapshot()
    money, refusals = window.refusals()
    return MetricsSnapshot(None, requests, errors, p99_ms, money, refusals)


def test_one_slow_request_among_few_does_not_alert() -> None:
    def kinds(snapshot: MetricsSnapshot, thresholds: Thresholds | None = None) -> list[str]:
        return [w.kind for w in system_alerts(snapshot, {}, thresholds)[0]]

    # the reported case: one slow request, and it is the p99 of the few there are
    few = _window_snapshot(fast_count=3, slow_count=1)
    assert (few.requests_count, few.latency_p99_ms) == (4, 2_001)  # 2 s's bucket bound
    assert kinds(few) == []
    assert kinds(_window_snapshot(fast_count=98, slow_count=1)) == []  # 99 requests: too few
    # 100 requests: the p99 is the 99th, a fast one
    assert _window_snapshot(fast_count=99, slow_count=1).latency_p99_ms == 1
    assert kinds(_window_snapshot(fast_count=99, slow_count=1)) == []
    enough = _window_snapshot(fast_count=98, slow_count=2)
    assert (enough.requests_count, enough.latency_p99_ms) == (100, 2_001)
    assert kinds(enough) == ["latency_p99"]
    wanted = system_alerts(enough, {})[0][0]
    assert wanted.message == "p99 latency 2001 ms over 100 requests exceeds 1000 ms"
    # the minimum is a setting: with 4 requests enough, the lone slow one alerts
    assert kinds(few, Thresholds(latency_requests_min=4)) == ["latency_p99"]
    # an open latency alert is cleared, not kept, when the traffic falls below the minimum
    assert system_alerts(few, {"SYSTEM|latency_p99": "warning"}) == ([], {
        "error_rate", "refusal_rate", "latency_p99"})


def test_refusal_rate_alert() -> None:
    # 409s of money routes: never 5xx errors, their own rate and minimum
    snap = _window_snapshot(fast_count=17, slow_count=0, refused_count=3)
    assert (snap.money_requests_count, snap.refusals_count, snap.errors_count) == (17, 3, 0)
    wanted, measured = system_alerts(snap, {})
    assert wanted == []  # 17 money requests: fewer than 20 say nothing yet
    assert measured == {"error_rate", "refusal_rate", "latency_p99"}
    snap = _window_snapshot(fast_count=20, slow_count=0, refused_count=3)
    wanted, _ = system_alerts(snap, {})
    assert [(w.kind, w.level, w.value) for w in wanted] == [("refusal_rate", "warning", "3/20")]
    assert wanted[0].message == "refusal rate 3/20 money requests exceeds 10%"
    # exactly 10 %: not above; open, it holds above 8 % (80 % of the threshold) and clears at it
    assert system_alerts(MetricsSnapshot(money_requests_count=100, refusals_count=10), {})[0] == []
    is_open = {"SYSTEM|refusal_rate": "warning"}
    held = system_alerts(MetricsSnapshot(money_requests_count=100, refusals_count=9), is_open)[0]
    assert [w.kind for w in held] == ["refusal_rate"]
    assert system_alerts(MetricsSnapshot(money_requests_count=100, refusals_count=8),
                         is_open)[0] == []
    # its threshold and minimum are settings
    loose = Thresholds(refusal_rate_pct_max=50, refusal_rate_requests_min=2)
    assert system_alerts(MetricsSnapshot(money_requests_count=2, refusals_count=1), {},
                         loose)[0] == []
    assert [w.kind for w in system_alerts(MetricsSnapshot(money_requests_count=2,
                                                          refusals_count=2), {}, loose)[0]] == [
        "refusal_rate"]


def test_thresholds_from_env_and_toml(tmp_path: Any) -> None:
    from engine.errors import InvalidRequest
    from engine.registry import CurrencyRegistry

    registry = CurrencyRegistry.load()
    assert MonitorConfig.from_env(registry, {}).thresholds == Thresholds()
    assert Thresholds().latency_requests_min == 100
    assert (Thresholds().refusal_rate_pct_max, Thresholds().refusal_rate_requests_min) == (10, 20)
    path = tmp_path / "alerts.toml"
    path.write_text("[thresholds]\nlatency_requests_min = 50\nrefusal_rate_pct_max = 20\n")
    config = MonitorConfig.from_env(registry, {
        "RESERVES_ALERT_CONFIG": str(path),
        "RESERVES_ALERT_THRESHOLDS": "refusal_rate_pct_max=30, refusal_rate_requests_min=5"})
    assert config.thresholds == Thresholds(latency_requests_min=50, refusal_rate_pct_max=30,
                                           refusal_rate_requests_min=5)
    with pytest.raises(InvalidRequest, match="unknown alert threshold 'latency_min'"):
        MonitorConfig.from_env(registry, {"RESERVES_ALERT_THRESHOLDS": "latency_min=5"})
    with pytest.raises(InvalidRequest, match=r"must be a whole number >= 0, got '1\.5'"):
        MonitorConfig.from_env(registry, {"RESERVES_ALERT_THRESHOLDS": "latency_p99_ms_max=1.5"})
    with pytest.raises(InvalidRequest, match="must be at most 100, got '101'"):
        MonitorConfig.from_env(registry, {"RESERVES_ALERT_THRESHOLDS": "error_rate_pct_max=101"})
    with pytest.raises(InvalidRequest, match="expected name=value"):
        MonitorConfig.from_env(registry, {"RESERVES_ALERT_THRESHOLDS": "latency_requests_min"})


def test_floors_from_env_and_toml(tmp_path: Any) -> None:
    from engine.errors import InvalidRequest
    from engine.registry import CurrencyRegistry

    registry = CurrencyRegistry.load()
    path = tmp_path / "alerts.toml"
    path.write_text('[floors]\nUSDT = "1000.5"\nUGX = "5000"\n'
                    '[webhooks]\nurls = ["http://127.0.0.1:1/x"]\nsecret = "s"\n')
    config = MonitorConfig.from_env(registry, {"RESERVES_ALERT_CONFIG": str(path),
                                               "RESERVES_ALERT_FLOORS": "ugx=7000"})
    assert config.floors_minor == {"USDT": 1_000_500_000, "UGX": 7000}
    assert config.webhook_urls == ("http://127.0.0.1:1/x",)
    assert config.webhook_secret == "s"
    with pytest.raises(InvalidRequest, match="has more than 0 decimal places"):
        MonitorConfig.from_env(registry, {"RESERVES_ALERT_FLOORS": "UGX=1.5"})
    with pytest.raises(InvalidRequest, match="http"):
        MonitorConfig.from_env(registry, {"RESERVES_ALERT_WEBHOOKS": "ftp://x"})


# -- the shared book on Redis ----------------------------------------------------------------


def _alert_events(engine: ReserveEngine, fields: list[tuple[str, dict[str, str]]]) -> list[JournalEvent]:
    return [e for e in (JournalEvent.parse(i, f) for i, f in fields)
            if e.op in ("alert_raised", "alert_cleared")]


async def _lock_to(engine: ReserveEngine, pct: int, held: list[str]) -> None:
    """Move USDT's locked amount to pct % of its 1000 total with holds of 1 % each."""
    while len(held) < pct:
        held.append(f"h{len(held)}-{engine.ops.clock_ms()}")
        await engine.reserve_amount("USDT", "10", "crypto", held[-1], "swap")
    while len(held) > pct:
        await engine.release_reserve(held.pop())


async def test_alerts_raise_once_escalate_and_clear(backend: dict[str, Any]) -> None:
    clock = Clock()
    client = backend["async_factory"]()
    engine = ReserveEngine(client, backend["settings"], clock_ms=clock)
    book = AlertBook(client, engine.ops.keys, clock)
    seen: list[dict[str, Any]] = []
    book.on_transition.append(seen.append)
    floors = {"USDT": 50_000_000}  # 50 USDT
    await engine.top_up_reserve("USDT", "1000", "crypto", "seed")
    held: list[str] = []

    async def step(pct: int) -> list[tuple[str, str]]:
        await _lock_to(engine, pct, held)
        clock.advance_s(1)
        applied = await book.evaluate(await engine.all_reserve_balances(), floors)
        return [(a["action"], f"{a['kind']}:{a.get('level', '')}") for a in applied]

    assert await step(74) == []
    assert await step(75) == [("raise", "utilization:warning")]
    assert await step(74) == []  # no flapping
    assert await step(76) == []
    assert await step(75) == []
    assert await step(90) == [("raise", "utilization:critical")]  # replaces the warning
    assert await step(96) == [("raise", "utilization:emergency"),
                              ("raise", "floor:critical")]  # available 40 < 50
    assert await step(95) == []
    assert await step(93) == [("clear", "floor:")]  # available 70 >= 52.5; emergency holds
    assert await step(89) == [("raise", "utilization:critical")]
    opened = await book.open_alerts()
    assert [(r["key"], r["level"]) for r in opened] == [("RESERVE_USDT_CRYPTO|utilization",
                                                         "critical")]
    assert opened[0]["message"] == "USDT reserve utilization 89.00% (>= 90%: critical)"
    assert await step(84) == [("raise", "utilization:warning")]
    assert await step(70) == []
    assert await step(69) == [("clear", "utilization:")]
    assert await book.open_alerts() == []
    assert len(seen) == 8
    assert seen[1]["replaces_event_id"] == seen[0]["event_id"]

    # Each transition is journalled in shard 0 (a replacement as a clear and a raise).
    events = _alert_events(engine, await client.xrange(engine.ops.keys.stream(0)))
    assert [e.op.removeprefix("alert_") for e in events] == [
        "raised", "cleared", "raised", "cleared", "raised", "raised", "cleared", "cleared",
        "raised", "cleared", "raised", "cleared"]
    assert [e.event_id for e in events] == sorted(e.event_id for e in events)
    raised = {e.event_id: e for e in events if e.op == "alert_raised"}
    for e in events:
        assert e.account == "" and e.d_total_minor == 0 and e.d_locked_minor == 0
        if e.op == "alert_cleared":
            assert int(e.meta["alert_id"]) in raised  # a clear names the alert it ends
    assert all(int(e.meta["alert_id"]) < e.event_id for e in events if e.op == "alert_cleared")
    first = events[0]
    assert first.reference == "RESERVE_USDT_CRYPTO|utilization"
    assert first.meta["level"] == "warning"
    assert first.ts_ms == START_MS + 2000  # raised at the second step
    history = await book.history()
    assert len(history) == 12
    assert history[0]["state"] == "cleared" and history[0]["kind"] == "utilization"
    await client.aclose()


async def test_two_processes_raise_an_alert_once(backend: dict[str, Any]) -> None:
    clients = [backend["async_factory"]() for _ in range(4)]
    engines = [ReserveEngine(c, backend["settings"]) for c in clients]
    await engines[0].top_up_reserve("USDT", "100", "crypto", "seed")
    await engines[0].reserve_amount("USDT", "96", "crypto", "big", "swap")
    books = [AlertBook(c, e.ops.keys) for c, e in zip(clients, engines, strict=True)]
    balances = await engines[0].all_reserve_balances()
    results = await asyncio.gather(*(b.evaluate(balances, {}) for b in books))
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    assert [r["level"] for r in await books[1].open_alerts()] == ["emergency"]
    # the recovery is cleared once too
    await engines[0].release_reserve("big")
    balances = await engines[0].all_reserve_balances()
    results = await asyncio.gather(*(b.evaluate(balances, {}) for b in books))
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    events = _alert_events(engines[0], await clients[0].xrange(engines[0].ops.keys.stream(0)))
    assert [e.op for e in events] == ["alert_raised", "alert_cleared"]
    for c in clients:
        await c.aclose()


async def test_system_alerts_keep_state_when_not_measured(backend: dict[str, Any]) -> None:
    client = backend["async_factory"]()
    engine = ReserveEngine(client, backend["settings"])
    book = AlertBook(client, engine.ops.keys)
    applied = await book.evaluate([], {}, MetricsSnapshot(requests_count=100, errors_count=0,
                                                          latency_p99_ms=2_000))
    assert [(a["action"], a["kind"]) for a in applied] == [("raise", "latency_p99")]
    assert await book.evaluate([], {}, None) == []  # no snapshot: the alert stays open
    assert await book.evaluate([], {}, MetricsSnapshot(persister_lag_ms=0)) == []
    applied = await book.evaluate([], {}, MetricsSnapshot(requests_count=100, errors_count=0,
                                                          latency_p99_ms=500))
    assert [(a["action"], a["kind"]) for a in applied] == [("clear", "latency_p99")]
    await client.aclose()


def test_every_alert_kind_raised_anywhere_is_in_the_api_schema() -> None:
    """The alert list's schema takes its kinds from ALERT_KINDS; a kind raised elsewhere (a
    flagged flow) but missing there made /wallet/reserves/alerts answer off its own schema."""
    from api.dashboard import ALERT
    from engine.flows.store import FLAG_ALERT_KIND
    from engine.monitoring.alerts import ALERT_KINDS

    assert FLAG_ALERT_KIND in ALERT_KINDS
    assert {"liquidity_request", "liquidity_flagged"} <= set(ALERT_KINDS)  # engine/liquidity
    assert ALERT["properties"]["kind"]["enum"] == list(ALERT_KINDS)
