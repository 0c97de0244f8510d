"""Automated top-ups (engine/liquidity): policies, triggers, the daily cap, idempotent requests,
signed and timestamped callbacks, the top-up applied once, a failing provider retried then
flagged. On fakeredis and the real Redis, with the clock moved by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.engine import ReserveEngine
from engine.errors import Conflict
from engine.flows.errors import BadSignature
from engine.journal import JournalEvent
from engine.liquidity import limits
from engine.liquidity.manager import LiquidityManager, backoff_ms, topup_reference
from engine.liquidity.policy import PolicyError, PolicySet
from engine.liquidity.provider import SimulatedLiquidityProvider, signed_callback
from engine.monitoring.alerts import AlertBook
from engine.monitoring.forecast import SampleBook
from engine.registry import CurrencyRegistry
from tests.engine_helpers import START_MS, Clock

SECRET = b"liquidity-test-secret"
EXAMPLE = Path(__file__).resolve().parent.parent / "engine" / "liquidity" / \
    "policies.example.toml"
USDT = "RESERVE_USDT_CRYPTO"


def _policies(text: str) -> PolicySet:
    import tomllib

    return PolicySet.parse(tomllib.loads(text), CurrencyRegistry.load(None), "p.toml")


# -- policies ----------------------------------------------------------------------------------


def test_the_shipped_example_parses() -> None:
    policies = PolicySet.load(EXAMPLE, CurrencyRegistry.load(None))
    assert [p.to_dict() for p in policies] == [
        {"account": USDT, "currency": "USDT", "account_type": "crypto", "utilization_pct": 75,
         "seconds_to_empty_max": 3600, "amount": None, "daily_cap": Decimal("50000"),
         "window_s": 3600},
        {"account": "RESERVE_UGX_FIAT", "currency": "UGX", "account_type": "fiat",
         "utilization_pct": 90, "seconds_to_empty_max": None, "amount": Decimal("5000000"),
         "daily_cap": Decimal("20000000"), "window_s": 7200}]
    usdt = policies.by_account[USDT]
    assert usdt.daily_cap_minor == 50_000_000_000


BASE = 'currency = "USDT"\nutilization_pct = 75\ndaily_cap = "100"\n'


@pytest.mark.parametrize(("text", "message"), [
    ("[[policy]]\n" + BASE.replace('daily_cap = "100"\n', ""),
     "liquidity policies p.toml: policy[0].daily_cap: required, the most requested per UTC day"),
    ("[[policy]]\n" + BASE.replace("75", "101"),
     "liquidity policies p.toml: policy[0].utilization_pct: must be a whole number from 1 to "
     "100, got 101"),
    ("[[policy]]\n" + BASE.replace("utilization_pct = 75\n", ""),
     "liquidity policies p.toml: policy[0].utilization_pct: a trigger is required "
     "(utilization_pct and / or seconds_to_empty_max)"),
    ("[[policy]]\n" + BASE.replace('"USDT"', '"XYZ"'),
     "liquidity policies p.toml: policy[0].currency: Unknown currency: XYZ"),
    ("[[policy]]\n" + BASE + 'account_type = "fiat"\n',
     "liquidity policies p.toml: policy[0].account_type: USDT is a crypto currency, not fiat"),
    ("[[policy]]\n" + BASE + 'amount = "1.0000001"\n',
     "liquidity policies p.toml: policy[0].amount: amount 1.0000001 has more than 6 decimal "
     "places, the precision of USDT"),
    ("[[policy]]\n" + BASE + "threshold = 3\n",
     "liquidity policies p.toml: policy[0].threshold: unknown field (expected one of currency, "
     "account_type, utilization_pct, seconds_to_empty_max, amount, daily_cap, window_s)"),
    ("[[policy]]\n" + BASE + "window_s = 10\n",
     "liquidity policies p.toml: policy[0].window_s: must be a whole number from 60 to 604800, "
     "got 10"),
    ("[[policy]]\n" + BASE + "[[policy]]\n" + BASE,
     "liquidity policies p.toml: policy[1].currency: a second policy for RESERVE_USDT_CRYPTO"),
    ("[policies]\n",
     "liquidity policies p.toml: unknown table 'policies' (expected [[policy]] entries)"),
])
def test_bad_policies_name_the_file_and_the_field(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as raised:
        _policies(text)
    assert str(raised.value) == message


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    registry = CurrencyRegistry.load(None)
    missing = tmp_path / "none.toml"
    with pytest.raises(PolicyError, match=f"^liquidity policies {missing}: cannot read: "):
        PolicySet.load(missing, registry)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[policy]\n")
    with pytest.raises(PolicyError, match=f"^liquidity policies {broken}: not valid TOML: "):
        PolicySet.load(broken, registry)


# -- the manager ---------------------------------------------------------------------------------


@dataclass
class World:
    engine: ReserveEngine
    manager: LiquidityManager
    provider: SimulatedLiquidityProvider
    samples: SampleBook
    alerts: AlertBook
    clock: Clock
    client: Any

    async def total(self, currency: str = "USDT") -> Decimal:
        balance = await self.engine.get_reserve_balance(currency)
        return balance.major(balance.total_minor)

    async def events(self) -> list[JournalEvent]:
        entries = await self.client.xrange(self.engine.ops.keys.stream(0))
        return [JournalEvent.parse(i, f) for i, f in entries]

    async def callback(self, tx_id: str, status: str = "success",
                       ts_s: int | None = None) -> dict[str, Any]:
        body, headers = self.provider.signed_callback(
            tx_id, status, self.clock() // 1000 if ts_s is None else ts_s)
        return await self.manager.callback(body, headers)

    def with_policies(self, text: str) -> LiquidityManager:
        self.manager = LiquidityManager(self.engine, _policies(text), self.provider,
                                        forecaster=self.samples.forecast, alerts=self.alerts)
        return self.manager


@pytest.fixture
async def world(backend: dict[str, Any]) -> AsyncIterator[World]:
    clock = Clock()
    client = backend["async_factory"]()
    engine = ReserveEngine(client, backend["settings"], clock_ms=clock)
    provider = SimulatedLiquidityProvider(SECRET, clock_s=lambda: clock() // 1000)
    samples = SampleBook(client, engine.ops.keys, clock)
    alerts = AlertBook(client, engine.ops.keys, clock)
    w = World(engine, None, provider, samples, alerts, clock, client)  # type: ignore[arg-type]
    w.with_policies("[[policy]]\n" + BASE.replace('"100"', '"10000"'))
    yield w
    await client.aclose()


async def _fill(w: World, total: str, locked: str) -> None:
    await w.engine.top_up_reserve("USDT", total, "crypto", f"seed_{total}")
    if Decimal(locked):
        await w.engine.reserve_amount("USDT", locked, "crypto", f"lock_{locked}", "swap")


async def test_trigger_by_utilization_requests_the_suggested_top_up(world: World) -> None:
    await _fill(world, "1000", "740")
    assert await world.manager.evaluate() == []  # 74 %: below the policy's 75 %
    await world.engine.reserve_amount("USDT", "60", "crypto", "more", "swap")  # 80 %
    [made] = await world.manager.evaluate()
    reference = f"liquidity:{USDT}:{START_MS}"  # the window starts on the hour
    # 800 locked over 1600 is 50 %: the forecast's suggestion, 600
    assert made == {
        "reference_id": reference, "account": USDT, "currency": "USDT",
        "account_type": "crypto", "state": "requested", "amount": Decimal("600.000000"),
        "reason": "utilization 80.00% >= 75%", "attempts": 0, "last_error": None,
        "provider_tx_id": None, "transaction_id": None, "created_ms": START_MS,
        "updated_ms": START_MS, "next_attempt_ms": START_MS}
    audit = [e for e in await world.events() if e.op == "audit"]
    assert [(e.reference, e.meta["actor"], e.meta["request"]["reference_id"],
             e.meta["request"]["amount"]) for e in audit] == [
        ("liquidity_request", "liquidity-manager", reference, "600.000000")]
    [alert] = await world.alerts.open_alerts()
    assert (alert["key"], alert["level"], alert["message"]) == (
        f"{USDT}:liquidity|liquidity_request", "warning",
        "USDT reserve: liquidity requested, 600.000000 USDT (utilization 80.00% >= 75%)")
    await world.manager.dispatch()
    [call] = world.provider.calls
    assert (call.reference_id, call.amount, call.account) == (reference, Decimal("600"), USDT)
    assert (await world.manager.get(reference))["state"] == "pending"
    assert await world.total() == Decimal("1000")  # nothing journalled before the callback


async def test_trigger_by_time_to_empty(world: World) -> None:
    """10 USDT more locked every minute for 10 minutes out of 1000: 90 minutes to empty."""
    await _fill(world, "1000", "0")
    await world.samples.record(await world.engine.get_reserve_balance("USDT"))
    for minute in range(1, 11):
        world.clock.advance_s(60)
        await world.engine.reserve_amount("USDT", "10", "crypto", f"m{minute}", "swap")
        await world.samples.record(await world.engine.get_reserve_balance("USDT"))
    forecast = await world.samples.forecast(await world.engine.get_reserve_balance("USDT"))
    assert forecast["seconds_to_empty"] == 5400
    assert forecast["suggested_top_up"] == 0  # 10 %: the policy's fixed amount is for this
    policy = ('[[policy]]\ncurrency = "USDT"\nseconds_to_empty_max = {}\namount = "250"\n'
              'daily_cap = "1000"\n')
    assert await world.with_policies(policy.format(5400)).evaluate() == []  # not below
    [made] = await world.with_policies(policy.format(5401)).evaluate()
    assert (made["amount"], made["reason"]) == (Decimal("250.000000"),
                                                "time to empty 5400 s < 5401 s")
    assert made["reference_id"] == f"liquidity:{USDT}:{START_MS}"


async def _accept(w: World, reference: str) -> tuple[bytes, dict[str, str]]:
    """The request sent and accepted; a signed success callback for it."""
    await w.manager.dispatch()
    request = await w.manager.get(reference)
    assert request["state"] == "pending", request
    return signed_callback(SECRET, request["provider_tx_id"], reference, "success",
                           w.clock() // 1000)


async def test_daily_cap_lowers_then_stops_requests(world: World) -> None:
    manager = world.with_policies('[[policy]]\ncurrency = "USDT"\nutilization_pct = 50\n'
                                  'amount = "500"\ndaily_cap = "700"\n')
    await _fill(world, "1000", "900")
    amounts = []
    for _ in range(3):  # three windows of the same UTC day
        made = await manager.evaluate()
        amounts.append([m["amount"] for m in made])
        if made:
            await manager.callback(*(await _accept(world, made[0]["reference_id"])))
        world.clock.advance_s(3600)
    assert amounts == [[Decimal("500.000000")], [Decimal("200.000000")], []]
    assert await world.total() == Decimal("1700")
    assert await manager.book.used_minor(USDT, world.clock()) == 700_000_000
    world.clock.advance_s(24 * 3600)  # the next UTC day: the cap is whole again
    [made] = await manager.evaluate()
    assert made["amount"] == Decimal("500.000000")


async def test_a_failed_request_gives_its_amount_back_to_the_cap(world: World) -> None:
    manager = world.with_policies('[[policy]]\ncurrency = "USDT"\nutilization_pct = 50\n'
                                  'amount = "500"\ndaily_cap = "700"\n')
    await _fill(world, "1000", "900")
    [made] = await manager.evaluate()
    body, headers = await _accept(world, made["reference_id"])
    tx_id = (await manager.get(made["reference_id"]))["provider_tx_id"]
    answer = await world.callback(tx_id, "failed")
    assert answer["request"]["state"] == "failed" and answer["duplicate_callback"] is False
    assert await manager.book.used_minor(USDT, world.clock()) == 0
    assert await world.total() == Decimal("1000")
    # a success after the failure changes nothing: the first decisive callback won
    late = await manager.callback(body, headers)
    assert (late["request"]["state"], late["duplicate_callback"]) == ("failed", True)
    assert await world.total() == Decimal("1000")
    assert await world.alerts.open_alerts() == []


async def test_a_trigger_makes_one_request_per_window(world: World) -> None:
    await _fill(world, "1000", "900")
    other = LiquidityManager(world.engine, world.manager.policies, world.provider,
                             forecaster=world.samples.forecast, alerts=world.alerts)
    made = await world.manager.evaluate()
    assert len(made) == 1
    assert await other.evaluate() == []  # a second process, the same trigger: the same request
    world.clock.advance_s(600)
    assert await world.manager.evaluate() == []  # the same window
    world.clock.advance_s(3600)
    assert await world.manager.evaluate() == []  # a new window, but one is still open
    await world.manager.callback(*(await _accept(world, made[0]["reference_id"])))
    assert await world.manager.evaluate() == []  # completed: 900 of 1800 is 50 %
    await world.engine.reserve_amount("USDT", "600", "crypto", "later", "swap")
    [second] = await world.manager.evaluate()  # open no more: a new window may ask again
    assert second["reference_id"] == f"liquidity:{USDT}:{START_MS + 3_600_000}"
    audits = [e.reference for e in await world.events() if e.op == "audit"]
    assert audits == ["liquidity_request", "liquidity_request"]


async def test_callback_signature_and_timestamp_are_checked(world: World) -> None:
    await _fill(world, "1000", "900")
    [made] = await world.manager.evaluate()
    reference = made["reference_id"]
    good_body, good_headers = await _accept(world, reference)
    tx_id = (await world.manager.get(reference))["provider_tx_id"]
    now_s = world.clock() // 1000
    cases = [
        ({**good_headers, "X-Signature": "0" * 64}, good_body, "bad_signature",
         "Invalid callback signature"),
        ({"X-Signature": good_headers["X-Signature"]}, good_body, "bad_timestamp",
         "Missing or malformed X-Timestamp"),
        # signed with another timestamp than the one shown
        ({**good_headers, "X-Timestamp": str(now_s + 1)}, good_body, "bad_signature",
         "Invalid callback signature"),
        (good_headers, good_body.replace(b"success", b"failed"), "bad_signature",
         "Invalid callback signature"),
    ]
    old = signed_callback(SECRET, tx_id, reference, "success",
                          now_s - limits.callback_window_s - 1)
    cases.append((old[1], old[0], "stale_callback",
                  "Callback timestamp is more than 300 s from our clock"))
    ahead = signed_callback(SECRET, tx_id, reference, "success",
                            now_s + limits.callback_window_s + 1)
    cases.append((ahead[1], ahead[0], "stale_callback",
                  "Callback timestamp is more than 300 s from our clock"))
    for headers, body, code, message in cases:
        with pytest.raises(BadSignature) as raised:
            await world.manager.callback(body, headers)
        assert (raised.value.details["code"], raised.value.message) == (code, message)
    assert (await world.manager.get(reference))["state"] == "pending"
    assert await world.total() == Decimal("1000")
    edge = signed_callback(SECRET, tx_id, reference, "success", now_s - limits.callback_window_s)
    answer = await world.manager.callback(edge[0], edge[1])  # just inside the window
    assert answer["request"]["state"] == "completed"
    unconfigured = SimulatedLiquidityProvider(b"")
    with pytest.raises(BadSignature) as raised:
        unconfigured.verify_callback(good_body, good_headers, world.clock())
    assert raised.value.details["code"] == "callback_secret_missing"


async def test_the_top_up_is_applied_once_however_often_the_callback_comes(
        world: World) -> None:
    await _fill(world, "1000", "900")
    [made] = await world.manager.evaluate()
    reference = made["reference_id"]
    body, headers = await _accept(world, reference)
    first = await world.manager.callback(body, headers)
    assert first["duplicate_callback"] is False
    assert first["request"]["state"] == "completed"
    transaction_id = first["request"]["transaction_id"]
    assert await world.total() == Decimal("1800")  # 900 / 1800 is 50 %
    for _ in range(3):
        again = await world.manager.callback(body, headers)
        assert again["duplicate_callback"] is True
        assert again["request"]["transaction_id"] == transaction_id
    topups = [e for e in await world.events() if e.op == "reserve_topup"]
    assert [(e.reference, e.amount_minor) for e in topups] == [
        ("seed_1000", 1_000_000_000), (topup_reference(reference), 800_000_000)]
    assert (topups[1].meta["action"], topups[1].meta["actor"]) == (
        "liquidity_topup", "liquidity:simulated")
    assert await world.total() == Decimal("1800")
    assert await world.alerts.open_alerts() == []  # the request's alert cleared on completion
    # a provider transaction other than the accepted one is refused, nothing changed
    other = signed_callback(SECRET, "liq-other", reference, "success", world.clock() // 1000)
    with pytest.raises(Conflict) as raised:
        await world.manager.callback(*other)
    assert raised.value.details["code"] == "provider_tx_mismatch"
    assert await world.total() == Decimal("1800")


async def test_a_crash_between_confirmation_and_top_up_is_finished_once(world: World) -> None:
    await _fill(world, "1000", "900")
    [made] = await world.manager.evaluate()
    reference = made["reference_id"]
    await _accept(world, reference)
    record = await world.manager.book.get(reference)
    assert record is not None
    # the callback's first step done, then the process died before the top-up
    code, _ = await world.manager.book.advance(world.clock(), record, ("pending",), "confirmed")
    assert code == 0
    await world.manager.dispatch()
    await world.manager.dispatch()
    request = await world.manager.get(reference)
    assert request["state"] == "completed"
    assert await world.total() == Decimal("1800")
    topups = [e for e in await world.events() if e.op == "reserve_topup"
              and e.reference == topup_reference(reference)]
    assert len(topups) == 1


async def test_a_failing_provider_is_retried_with_backoff_then_flagged(world: World) -> None:
    world.provider.fail_always = True
    await _fill(world, "1000", "900")
    [made] = await world.manager.evaluate()
    reference = made["reference_id"]
    await world.manager.dispatch()
    assert len(world.provider.calls) == 1
    request = await world.manager.get(reference)
    assert (request["state"], request["attempts"], request["next_attempt_ms"]) == (
        "requested", 1, START_MS + backoff_ms(1))
    assert request["last_error"] == f"Liquidity provider unavailable for {reference}"
    for attempt in range(2, limits.provider_attempts_max + 1):
        world.clock.now_ms += backoff_ms(attempt - 1) - 1
        await world.manager.dispatch()  # not due yet
        assert len(world.provider.calls) == attempt - 1
        world.clock.now_ms += 1
        await world.manager.dispatch()
        assert len(world.provider.calls) == attempt
    assert [backoff_ms(n) for n in range(1, 6)] == [2000, 4000, 8000, 16000, 32000]
    request = await world.manager.get(reference)
    assert request["state"] == "flagged"
    assert request["attempts"] == limits.provider_attempts_max
    assert request["last_error"] == (f"provider failed 5 times: Liquidity provider unavailable "
                                     f"for {reference}")
    world.clock.advance_s(3600)
    await world.manager.dispatch()
    assert len(world.provider.calls) == limits.provider_attempts_max  # no more attempts
    [alert] = await world.alerts.open_alerts()
    assert (alert["key"], alert["level"]) == (f"{USDT}:liquidity|liquidity_flagged", "critical")
    assert alert["message"] == (
        f"USDT reserve: liquidity request {reference} needs an operator: provider failed 5 "
        f"times: Liquidity provider unavailable for {reference}")
    audits = [e.reference for e in await world.events() if e.op == "audit"]
    assert audits == ["liquidity_request", "liquidity_flagged"]
    assert await world.total() == Decimal("1000")


async def test_a_provider_back_before_the_last_attempt_takes_the_request(world: World) -> None:
    world.provider.failures_left = 2
    await _fill(world, "1000", "900")
    [made] = await world.manager.evaluate()
    for _ in range(3):
        await world.manager.dispatch()
        world.clock.advance_s(60)
    request = await world.manager.get(made["reference_id"])
    assert (request["state"], request["attempts"]) == ("pending", 3)
    assert request["provider_tx_id"].startswith("liq-")


async def test_a_request_never_called_back_is_flagged(world: World) -> None:
    await _fill(world, "1000", "900")
    [made] = await world.manager.evaluate()
    await world.manager.dispatch()
    world.clock.advance_s(limits.callback_wait_s_max)
    await world.manager.dispatch()
    assert (await world.manager.get(made["reference_id"]))["state"] == "pending"
    world.clock.advance_s(1)
    await world.manager.dispatch()
    flagged = await world.manager.get(made["reference_id"])
    assert flagged["state"] == "flagged"
    assert flagged["last_error"] == f"no callback within {limits.callback_wait_s_max} s"
    # the provider's late success still tops the reserve up, once
    answer = await world.callback(flagged["provider_tx_id"])
    assert answer["request"]["state"] == "completed"
    assert await world.total() == Decimal("1800")
    assert await world.alerts.open_alerts() == []


async def test_an_operator_dismisses_a_flagged_request(world: World) -> None:
    world.provider.fail_always = True
    await _fill(world, "1000", "900")
    [made] = await world.manager.evaluate()
    reference = made["reference_id"]
    for _ in range(limits.provider_attempts_max):
        await world.manager.dispatch()
        world.clock.advance_s(3600)
    assert (await world.manager.get(reference))["state"] == "flagged"
    assert await world.manager.book.used_minor(USDT, START_MS) == 800_000_000
    dismissed = await world.manager.dismiss(reference, "admin-1", "10.0.0.1")
    assert dismissed["state"] == "dismissed"
    assert await world.manager.book.used_minor(USDT, START_MS) == 0  # back to the cap
    assert await world.alerts.open_alerts() == []
    with pytest.raises(Conflict) as raised:
        await world.manager.dismiss(reference, "admin-1", "10.0.0.1")
    assert raised.value.message == f"Liquidity request {reference} is dismissed, not flagged"
    [audit] = [e for e in await world.events() if e.reference == "liquidity_dismissed"]
    assert (audit.meta["actor"], audit.meta["ip"]) == ("admin-1", "10.0.0.1")
    # the provider's late word on it changes nothing
    world.provider.fail_always = False
    world.provider.transactions["liq-late"] = world.provider.calls[0]
    answer = await world.callback("liq-late")
    assert (answer["request"]["state"], answer["duplicate_callback"]) == ("dismissed", True)
    assert await world.total() == Decimal("1000")


async def test_an_admin_top_up_named_like_a_request_does_not_take_its_place(
        world: World) -> None:
    """The request's reference is public (callbacks and dismissals name it), so an admin's
    top-up may carry the same text; the request's own top-up still happens, under an internal
    reference (issue 15 item 2, found again in the liquidity manager)."""
    await _fill(world, "1000", "900")
    [made] = await world.manager.evaluate()
    reference = made["reference_id"]
    await world.engine.top_up_reserve("USDT", "800", "crypto", reference)  # same text, amount
    assert await world.total() == Decimal("1800")
    body, headers = await _accept(world, reference)
    answer = await world.manager.callback(body, headers)
    assert answer["request"]["state"] == "completed"
    assert answer["request"]["transaction_id"] is not None
    assert await world.total() == Decimal("2600")  # both top-ups applied, once each
