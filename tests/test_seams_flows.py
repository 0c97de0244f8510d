"""The seams of the flows (issue 15, items 1, 3, 4, 5 and 12), on fakeredis and the real Redis:
a flow that fails deterministically ends compensated and flagged; one failing flow never delays
another; a success after expiry is flagged and settled by an operator; a callback is bound to
its transaction and its signed time, and a flow reference is never reused; the flow records
come back from the book of record after Redis lost them."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import fakeredis
import pytest

from engine.engine import ReserveEngine
from engine.errors import Conflict, InsufficientReserve, InvalidRequest, ReferenceConflict
from engine.flows import limits
from engine.flows.errors import BadSignature
from engine.flows.providers import ProviderRequest, SimulatedProvider, sign
from engine.flows.rates import StaticPriceSource
from engine.flows.wallet import Wallet
from engine.ops import AccountSpec
from persistence.rebuild import rebuild
from tests.flows_support import SECRET, Rig, make_rig

LABELS = ["RESERVE_USDT_CRYPTO", "RESERVE_UGX_FIAT", "USER_u1_USDT", "USER_u1_UGX"]
PHONE = "+256700000001"


@pytest.fixture
def rig(backend: dict[str, Any], async_redis: Any) -> Rig:
    return make_rig(backend, async_redis)


async def _funded(rig: Rig) -> None:
    await rig.seed_reserve("USDT", "1000")
    await rig.seed_reserve("UGX", "10000000")
    await rig.deposit("u1", "USDT", "100")


async def _state(rig: Rig) -> dict[str, tuple[int, int]]:
    out = {}
    for label in LABELS:
        try:
            out[label] = await rig.minor(label)
        except Exception:  # noqa: BLE001 (never opened)
            out[label] = (0, 0)
    return out


async def _callback(rig: Rig, view: dict[str, Any], status: str) -> dict[str, Any]:
    body, headers = rig.provider.signed_callback(view["provider_tx_id"], status)
    return await rig.wallet.mobile_money.callback(body, headers)


async def _open_alerts(rig: Rig) -> dict[str, str]:
    return {a["key"]: a["level"] for a in await rig.wallet.store.alerts.open_alerts()}


def _refuse_user_credit(rig: Rig, monkeypatch: pytest.MonkeyPatch, currency: str,
                        error: Exception) -> None:
    """The user's credit in one currency fails deterministically (as a credit refused 400)."""
    real = rig.engine.ops.top_up

    def top_up(spec: AccountSpec, *args: Any, **kwargs: Any) -> Any:
        if spec.label == f"USER_u1_{currency}":
            raise error
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(rig.engine.ops, "top_up", top_up)


# -- 1: a deterministic error never leaves a flow half-way --------------------------------------


async def test_a_refused_credit_ends_the_swap_compensated_flagged_and_alerted(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    await _funded(rig)
    before = await _state(rig)
    refused = InvalidRequest("credit refused", code="invalid_reference")
    _refuse_user_credit(rig, monkeypatch, "UGX", refused)
    with pytest.raises(InvalidRequest):
        await rig.wallet.swaps.create("u1", "USDT", "UGX", "10", "s1")
    assert (await rig.wallet.swaps.get("s1"))["state"] == "executing"
    rig.clock.advance_s(limits.swap_hold_ttl_s)
    result = await rig.wallet.recover()
    assert (result.looked_at_count, result.settled_count) == (1, 1)
    view = await rig.wallet.swaps.get("s1")
    assert (view["state"], view["flag"]) == ("failed", "recovery_failed")
    assert view["error"]["code"] == "invalid_reference"
    assert await _state(rig) == before  # the user's debit and the reserves' legs undone
    assert await rig.wallet.store.open_count() == 0  # never looked at again
    [flagged] = await rig.wallet.flagged()
    assert (flagged["kind"], flagged["reference_id"], flagged["state"], flagged["flag"]) == (
        "swap", "s1", "failed", "recovery_failed")
    assert flagged["error"]["code"] == "invalid_reference"
    assert await _open_alerts(rig) == {"swap:s1|flow_flagged": "critical"}


# -- 3: one bad flow never delays another ------------------------------------------------------


async def test_a_failing_flow_backs_off_and_never_delays_a_good_one(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    await _funded(rig)
    # first in the due set: a swap whose user credit fails with a transient error
    _refuse_user_credit(rig, monkeypatch, "UGX", RuntimeError("Redis went away"))
    with pytest.raises(RuntimeError):
        await rig.wallet.swaps.create("u1", "USDT", "UGX", "10", "poisoned")
    rig.clock.advance_s(1)
    good = await rig.wallet.mobile_money.buy("u1", "UGX", "USDT", "37000", PHONE, "good")
    assert good["state"] == "pending"
    rig.clock.advance_s(limits.mobile_money_hold_ttl_s)
    result = await rig.wallet.recover()
    assert result.looked_at_count == 2
    assert (await rig.wallet.mobile_money.get("good"))["state"] == "expired"  # same pass
    assert (await rig.wallet.swaps.get("poisoned"))["state"] == "executing"
    # the failed one waits its backoff: not due again at once, due after it
    assert (await rig.wallet.recover()).looked_at_count == 0
    for attempt in range(1, limits.recover_attempts_max):
        backoff_s = min(limits.recover_backoff_s_base * 2 ** (attempt - 1),
                        limits.recover_backoff_s_max)
        rig.clock.advance_s(backoff_s - 1)
        assert (await rig.wallet.recover()).looked_at_count == 0
        rig.clock.advance_s(1)
        assert (await rig.wallet.recover()).looked_at_count == 1
    # out of attempts: flagged for an operator (its compensation fails the same way), and
    # recovery stops trying it
    assert (await rig.wallet.swaps.get("poisoned"))["state"] == "executing"
    assert await rig.wallet.store.open_count() == 0
    [flagged] = await rig.wallet.flagged()
    assert (flagged["reference_id"], flagged["flag"]) == ("poisoned", "recovery_failed")
    assert flagged["error"]["code"] == "internal_error"
    assert flagged["error"]["compensation_error"]["error"] == "RuntimeError: Redis went away"
    assert await _open_alerts(rig) == {"swap:poisoned|flow_flagged": "critical"}


# -- 4: a success after expiry is recorded, flagged and settled ---------------------------------


async def _expired_buy(rig: Rig, ref: str) -> dict[str, Any]:
    view = await rig.wallet.mobile_money.buy("u1", "UGX", "USDT", "37000", PHONE, ref)
    rig.clock.advance_s(limits.mobile_money_hold_ttl_s)
    await rig.wallet.recover()
    assert (await rig.wallet.mobile_money.get(ref))["state"] == "expired"
    return view


async def test_a_success_after_expiry_is_flagged_and_an_operator_credits_it(rig: Rig) -> None:
    await _funded(rig)
    before = await _state(rig)
    view = await _expired_buy(rig, "b1")
    late = await _callback(rig, view, "success")
    assert (late["state"], late["outcome"]) == ("settled_after_expiry", "expired")
    assert await _state(rig) == before  # nothing moved yet: an operator decides
    [flagged] = await rig.wallet.flagged()
    assert (flagged["reference_id"], flagged["flag"]) == ("b1", "settled_after_expiry")
    assert flagged["error"]["code"] == "callback_contradicts"
    assert await _open_alerts(rig) == {"mm:b1|flow_flagged": "critical"}
    record = await rig.wallet.store.load("mm", "b1")
    assert record["last_callback"].startswith("success@")

    admin = {"actor": "ops-1", "ip": "10.0.0.9"}
    with pytest.raises(InvalidRequest):
        await rig.wallet.mobile_money.settle("b1", "burn", admin)
    done = await rig.wallet.mobile_money.settle("b1", "credit", admin)
    assert done["state"] == "completed"
    after = {**before,
             "RESERVE_USDT_CRYPTO": (1_000_000_000 - 9_890_100, 0),
             "RESERVE_UGX_FIAT": (10_000_000 + 37_000, 0),
             "USER_u1_USDT": (100_000_000 + 9_890_100, 0)}
    assert await _state(rig) == after
    again = await rig.wallet.mobile_money.settle("b1", "credit", admin)  # idempotent
    assert again["state"] == "completed"
    assert await _state(rig) == after
    redelivered = await _callback(rig, view, "success")  # the provider's retry: nothing new
    assert (redelivered["state"], redelivered["duplicate_callback"]) == ("completed", True)
    assert await _state(rig) == after
    with pytest.raises(Conflict) as info:
        await rig.wallet.mobile_money.settle("b1", "refunded", admin)
    assert info.value.details["code"] == "already_settled"
    assert await rig.wallet.flagged() == []
    assert await _open_alerts(rig) == {}
    actors = {e.meta.get("actor") for e in rig.money_events() if e.meta.get("ref") == "b1"}
    assert "ops-1" in actors  # the operator's credit carries its audit data


async def test_settling_without_liquidity_is_409_and_refunded_is_recorded(rig: Rig) -> None:
    await rig.seed_reserve("USDT", "10")
    await rig.seed_reserve("UGX", "10000000")
    view = await _expired_buy(rig, "b2")
    await _callback(rig, view, "success")
    await rig.engine.withdraw_from_reserve("USDT", "5", None, "drain")  # liquidity went
    before = await _state(rig)
    with pytest.raises(InsufficientReserve):
        await rig.wallet.mobile_money.settle("b2", "credit", {})
    assert await _state(rig) == before
    assert (await rig.wallet.mobile_money.get("b2"))["state"] == "settled_after_expiry"
    done = await rig.wallet.mobile_money.settle("b2", "refunded", {})
    assert done["state"] == "refunded"
    assert await _state(rig) == before
    assert await rig.wallet.flagged() == []
    with pytest.raises(Conflict):
        await rig.wallet.mobile_money.settle("b2", "credit", {})


# -- 5: a callback binds to one operation, within its time; references are never reused --------


async def test_a_stale_callback_is_refused_and_changes_nothing(rig: Rig) -> None:
    await _funded(rig)
    view = await rig.wallet.mobile_money.buy("u1", "UGX", "USDT", "37000", PHONE, "b1")
    before = await _state(rig)
    old_ms = rig.clock() - limits.callback_age_s_max * 1000 - 1
    body, headers = rig.provider.signed_callback(view["provider_tx_id"], "success", old_ms)
    with pytest.raises(BadSignature) as info:
        await rig.wallet.mobile_money.callback(body, headers)
    assert info.value.details["code"] == "callback_stale"
    assert (await rig.wallet.mobile_money.get("b1"))["state"] == "pending"
    assert await _state(rig) == before
    unstamped = json.dumps({"provider_tx_id": view["provider_tx_id"], "reference_id": "b1",
                            "status": "success"}).encode()
    with pytest.raises(BadSignature) as info:
        await rig.wallet.mobile_money.callback(unstamped, {"X-Signature": sign(SECRET,
                                                                               unstamped)})
    assert info.value.details["code"] == "bad_callback"


async def test_a_reference_is_never_reused_after_the_record_expired(rig: Rig) -> None:
    await _funded(rig)
    view = await rig.wallet.mobile_money.buy("u1", "UGX", "USDT", "37000", PHONE, "b1")
    captured = rig.provider.signed_callback(view["provider_tx_id"], "success")
    await rig.wallet.mobile_money.callback(*captured)
    await rig.wallet.swaps.create("u1", "USDT", "UGX", "1", "s1")
    # the records' retention passes (their Redis TTL)
    rig.backend["sync"].delete(rig.wallet.store.key("mm", "b1"),
                               rig.wallet.store.key("swap", "s1"))
    before = await _state(rig)
    with pytest.raises(ReferenceConflict) as info:
        await rig.wallet.mobile_money.buy("u1", "UGX", "USDT", "37000", PHONE, "b1")
    assert info.value.details["code"] == "reference_reused"
    with pytest.raises(ReferenceConflict) as info:
        await rig.wallet.swaps.create("u1", "USDT", "UGX", "1", "s1")
    assert info.value.details["code"] == "reference_reused"
    with pytest.raises(Exception):  # noqa: B017 (the captured callback finds no operation)
        await rig.wallet.mobile_money.callback(*captured)
    assert await _state(rig) == before


async def test_a_callback_before_the_transaction_is_recorded_does_not_count(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    await _funded(rig)
    mm = rig.wallet.mobile_money
    seen: list[Any] = []
    real_initiate = mm._initiate

    async def initiate(ref: str, r: dict[str, str]) -> None:
        # the provider has the transaction, the operation has not recorded it yet
        tx_id = await rig.provider.initiate_collection(
            ProviderRequest("collection", ref, r["phone_number"], "UGX", Decimal(37000)))
        body, headers = rig.provider.signed_callback(tx_id, "success")
        try:
            await mm.callback(body, headers)
        except Conflict as err:
            seen.append(err.details["code"])
        await real_initiate(ref, r)

    monkeypatch.setattr(mm, "_initiate", initiate)
    view = await mm.buy("u1", "UGX", "USDT", "37000", PHONE, "b1")
    assert seen == ["callback_too_early"]
    assert (view["state"], view["outcome"]) == ("pending", None)


# -- 12: the flow records come back after Redis lost them -----------------------------------------


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_rebuild_restores_a_pending_buy_and_its_callback_completes_it(
        store: str, tmp_path: Any, key_prefix: str, request: pytest.FixtureRequest) -> None:
    """Embedded (a new fakeredis, as after a restart, reloaded from SQLite) and real (Redis
    lost the prefix's keys; `rebuild` from Postgres)."""
    from dataclasses import replace

    import redis
    import redis.asyncio

    from engine.config import Settings
    from persistence.migrate import ensure_schema
    from persistence.worker import Persister
    from tests.engine_helpers import Clock
    from tests.services import delete_prefix

    clock = Clock()
    if store == "sqlite":
        db_url = f"sqlite:///{tmp_path}/reserves.db"
        settings = replace(Settings(), key_prefix=key_prefix, database_url=db_url)
        ensure_schema(db_url)
    else:
        db_url = request.getfixturevalue("fresh_database_url")
        redis_url = request.getfixturevalue("redis_url")
        settings = replace(Settings(), key_prefix=key_prefix, database_url=db_url,
                           redis_url=redis_url)
    clients: list[Any] = []

    def stack() -> tuple[Any, Wallet, SimulatedProvider]:
        if store == "sqlite":
            server = fakeredis.FakeServer()
            sync = fakeredis.FakeRedis(server=server, decode_responses=True)
            client = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
        else:
            sync = redis.Redis.from_url(redis_url, decode_responses=True)
            client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
            delete_prefix(sync, key_prefix)  # Redis lost everything
        clients.append(client)
        provider = SimulatedProvider(SECRET, clock_ms=clock)
        engine = ReserveEngine(client, settings, clock_ms=clock)
        return sync, Wallet(engine, StaticPriceSource.load(), provider), provider

    try:
        sync, wallet, provider = stack()
        await wallet.engine.top_up_reserve("USDT", "1000", None, "seed-usdt")
        await wallet.engine.top_up_reserve("UGX", "100000", None, "seed-ugx")
        view = await wallet.mobile_money.buy("u1", "UGX", "USDT", "37000", PHONE, "b1")
        callback = provider.signed_callback(view["provider_tx_id"], "success")
        persister = Persister(sync, settings, db_url, "p1")
        await asyncio.to_thread(persister.drain, timeout_s=30)
        persister.close()

        sync, wallet, provider = stack()  # a new, empty Redis
        assert await wallet.store.load("mm", "b1") == {}
        report = rebuild(sync, settings, db_url, now_ms=clock())
        assert report.flows_count == 1
        assert (await wallet.mobile_money.get("b1"))["state"] == "pending"
        assert await wallet.store.open_count() == 1
        done = await wallet.mobile_money.callback(*callback)
        assert (done["state"], done["duplicate_callback"]) == ("completed", False)
        spec = wallet.engine.ops.user_spec("u1", "USDT")
        assert (await wallet.engine.run(wallet.engine.ops.balance(spec))).total_minor == 9_890_100
        assert await wallet.store.was_used("mm", "b1")
    finally:
        if store == "postgres":
            delete_prefix(redis.Redis.from_url(redis_url), key_prefix)
        for client in clients:
            await client.aclose()
