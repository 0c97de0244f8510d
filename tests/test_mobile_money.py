"""Mobile-money buys and sells (fakeredis and real Redis): success to the minor unit, provider
failure, callback never arriving (TTL expiry), duplicate and badly signed callbacks."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.errors import InsufficientReserve, ReferenceConflict
from engine.flows import limits
from engine.flows.errors import BadSignature, InsufficientFunds, RecordedFailure
from tests.flows_support import Rig, make_rig

LABELS = ["RESERVE_USDT_CRYPTO", "RESERVE_UGX_FIAT", "USER_u1_USDT"]


@pytest.fixture
def rig(backend: dict[str, Any], async_redis: Any) -> Rig:
    return make_rig(backend, async_redis)


async def _state(rig: Rig) -> dict[str, tuple[int, int]]:
    return {label: await rig.minor(label) for label in LABELS}


async def _funded(rig: Rig, usdt: str = "1000", ugx: str = "100000", user_usdt: str = "20") -> None:
    await rig.seed_reserve("USDT", usdt)
    await rig.seed_reserve("UGX", ugx)
    await rig.deposit("u1", "USDT", user_usdt)


async def _callback(rig: Rig, view: dict[str, Any], status: str) -> dict[str, Any]:
    body, headers = rig.provider.signed_callback(view["provider_tx_id"], status)
    return await rig.wallet.mobile_money.callback(body, headers)


async def test_buy_succeeds_on_the_success_callback(rig: Rig) -> None:
    await _funded(rig)
    # 37000 UGX * 0.00027 * 0.99 = 9.890100 USDT
    view = await rig.wallet.mobile_money.buy("u1", "UGX", "USDT", "37000", "+256700000001", "b1")
    assert (view["state"], view["crypto_amount"]) == ("pending", Decimal("9.8901"))
    assert (await _state(rig))["RESERVE_USDT_CRYPTO"] == (1_000_000_000, 9_890_100)
    request = rig.provider.transactions[view["provider_tx_id"]]
    assert (request.kind, request.amount, request.currency) == ("collection", 37000, "UGX")
    done = await _callback(rig, view, "success")
    assert (done["state"], done["duplicate_callback"]) == ("completed", False)
    assert await _state(rig) == {
        "RESERVE_USDT_CRYPTO": (1_000_000_000 - 9_890_100, 0),
        "RESERVE_UGX_FIAT": (100_000 + 37_000, 0),
        "USER_u1_USDT": (20_000_000 + 9_890_100, 0),
    }
    events = len(rig.money_events())
    again = await _callback(rig, view, "success")  # duplicate: nothing changes
    assert (again["state"], again["duplicate_callback"]) == ("completed", True)
    flipped = await _callback(rig, view, "failed")  # a contradicting repeat: first one stands
    assert (flipped["state"], flipped["outcome"]) == ("completed", "success")
    assert len(rig.money_events()) == events
    assert (await rig.wallet.mobile_money.get("b1"))["legs"][0]["state"] == "committed"


async def test_sell_succeeds_on_the_success_callback(rig: Rig) -> None:
    await _funded(rig)
    # 10 USDT * 3700 * 0.99 = 36630 UGX
    view = await rig.wallet.mobile_money.sell("u1", "USDT", "UGX", "10", "+256700000001", "s1")
    assert (view["state"], view["fiat_amount"]) == ("pending", Decimal("36630"))
    assert await _state(rig) == {"RESERVE_USDT_CRYPTO": (1_000_000_000, 0),
                                 "RESERVE_UGX_FIAT": (100_000, 36_630),
                                 "USER_u1_USDT": (20_000_000, 10_000_000)}
    assert rig.provider.transactions[view["provider_tx_id"]].kind == "payout"
    done = await _callback(rig, view, "success")
    assert done["state"] == "completed"
    assert await _state(rig) == {"RESERVE_USDT_CRYPTO": (1_010_000_000, 0),
                                 "RESERVE_UGX_FIAT": (100_000 - 36_630, 0),
                                 "USER_u1_USDT": (10_000_000, 0)}


@pytest.mark.parametrize("direction", ["buy", "sell"])
async def test_failure_callback_releases_everything(rig: Rig, direction: str) -> None:
    await _funded(rig)
    before = await _state(rig)
    view = await _start(rig, direction, "op1")
    assert await _state(rig) != before
    done = await _callback(rig, view, "failed")
    assert (done["state"], done["outcome"]) == ("failed", "failed")
    assert await _state(rig) == before
    assert {leg["state"] for leg in done["legs"]} == {"released"}


async def _start(rig: Rig, direction: str, ref: str) -> dict[str, Any]:
    if direction == "buy":
        return await rig.wallet.mobile_money.buy("u1", "UGX", "USDT", "37000", "0700000001", ref)
    return await rig.wallet.mobile_money.sell("u1", "USDT", "UGX", "10", "0700000001", ref)


@pytest.mark.parametrize("direction", ["buy", "sell"])
async def test_callback_never_arriving_expires_and_releases(rig: Rig, direction: str) -> None:
    await _funded(rig)
    before = await _state(rig)
    view = await _start(rig, direction, "op1")
    rig.clock.advance_s(limits.mobile_money_hold_ttl_s - 1)
    assert (await rig.wallet.recover()).looked_at_count == 0
    rig.clock.advance_s(1)
    await rig.engine.sweep()  # the engine's TTL sweeper gets there first
    assert await _state(rig) == before
    result = await rig.wallet.recover()
    assert (result.looked_at_count, result.settled_count) == (1, 1)
    done = await rig.wallet.mobile_money.get("op1")
    assert (done["state"], {leg["state"] for leg in done["legs"]}) == ("expired", {"expired"})
    late = await _callback(rig, view, "success")  # too late: flagged for an operator
    assert (late["state"], late["duplicate_callback"]) == ("settled_after_expiry", True)
    assert await _state(rig) == before


@pytest.mark.parametrize("direction", ["buy", "sell"])
async def test_provider_failure_releases_and_is_502(rig: Rig, direction: str) -> None:
    await _funded(rig)
    before = await _state(rig)
    rig.provider.fail_initiation = True
    with pytest.raises(RecordedFailure) as info:
        await _start(rig, direction, "op1")
    assert info.value.status_code == 502
    assert info.value.to_dict()["code"] == "provider_refused"
    assert await _state(rig) == before
    assert (await rig.wallet.mobile_money.get("op1"))["state"] == "failed"
    rig.provider.fail_initiation = False
    with pytest.raises(RecordedFailure):  # a repeat gets the same answer, holds nothing
        await _start(rig, direction, "op1")
    assert await _state(rig) == before


async def test_bad_signature_is_refused_and_changes_nothing(rig: Rig) -> None:
    await _funded(rig)
    view = await _start(rig, "buy", "op1")
    before = await _state(rig)
    record = await rig.wallet.store.load("mm", "op1")
    body, headers = rig.provider.signed_callback(view["provider_tx_id"], "success")
    for bad_body, bad_headers in [
        (body, {"X-Signature": "00" * 32}),
        (body.replace(b"success", b"failed!"), headers),
        (body, {}),
    ]:
        with pytest.raises(BadSignature) as info:
            await rig.wallet.mobile_money.callback(bad_body, bad_headers)
        assert info.value.status_code == 401
    assert await _state(rig) == before
    assert await rig.wallet.store.load("mm", "op1") == record


@pytest.mark.parametrize("short", ["reserve", "user"])
async def test_sell_refusals_roll_back(rig: Rig, short: str) -> None:
    if short == "reserve":
        await _funded(rig, ugx="1000")
    else:
        await _funded(rig, user_usdt="5")
    before = await _state(rig)
    expected = InsufficientReserve if short == "reserve" else InsufficientFunds
    with pytest.raises(expected) as info:
        await _start(rig, "sell", "op1")
    assert info.value.status_code == 409
    assert await _state(rig) == before
    assert rig.provider.transactions == {}


async def test_buy_with_a_short_crypto_reserve_is_409(rig: Rig) -> None:
    await _funded(rig, usdt="5")
    before = await _state(rig)
    with pytest.raises(InsufficientReserve, match="Required: 9.8901, Available: 5.0"):
        await _start(rig, "buy", "op1")
    assert await _state(rig) == before


async def test_duplicate_request_is_the_same_operation(rig: Rig) -> None:
    await _funded(rig)
    first = await _start(rig, "buy", "op1")
    again = await _start(rig, "buy", "op1")
    assert again == first
    assert len(rig.provider.transactions) == 1
    assert (await _state(rig))["RESERVE_USDT_CRYPTO"] == (1_000_000_000, 9_890_100)
    with pytest.raises(ReferenceConflict):
        await _start(rig, "sell", "op1")


async def test_simulated_provider_calls_back_by_itself(
        backend: dict[str, Any], async_redis: Any) -> None:
    rig = make_rig(backend, async_redis, outcome=lambda r: "failed" if r.phone_number.endswith(
        "9") else "success")
    rig.provider.sink = rig.wallet.mobile_money.callback
    await _funded(rig)
    await rig.wallet.mobile_money.buy("u1", "UGX", "USDT", "37000", "0700000001", "ok")
    await rig.wallet.mobile_money.buy("u1", "UGX", "USDT", "37000", "0700000009", "ko")
    await rig.provider.settle()
    assert (await rig.wallet.mobile_money.get("ok"))["state"] == "completed"
    assert (await rig.wallet.mobile_money.get("ko"))["state"] == "failed"
    assert await _state(rig) == {"RESERVE_USDT_CRYPTO": (1_000_000_000 - 9_890_100, 0),
                                 "RESERVE_UGX_FIAT": (137_000, 0),
                                 "USER_u1_USDT": (29_890_100, 0)}
