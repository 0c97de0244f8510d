"""Swaps on the engine (fakeredis and real Redis): success to the minor unit, every refusal
rolls back exactly, duplicates, quotes, and crashes finished or undone by recover()."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.errors import InsufficientReserve, InvalidRequest, ReferenceConflict
from engine.flows import limits, swap
from engine.flows.errors import InsufficientFunds, QuoteExpired, RecordedFailure
from engine.references import flow_reference
from tests.flows_support import Rig, make_rig


@pytest.fixture
def rig(backend: dict[str, Any], async_redis: Any) -> Rig:
    return make_rig(backend, async_redis)


async def _funded(rig: Rig, usdt_reserve: str = "1000", ugx_reserve: str = "10000000",
                  user_usdt: str = "100") -> None:
    await rig.seed_reserve("USDT", usdt_reserve)
    await rig.seed_reserve("UGX", ugx_reserve)
    await rig.deposit("u1", "USDT", user_usdt)


async def _state(rig: Rig) -> dict[str, tuple[int, int]]:
    labels = ["RESERVE_USDT_CRYPTO", "RESERVE_UGX_FIAT", "USER_u1_USDT", "USER_u1_UGX"]
    return {label: await rig.minor(label) for label in labels}


async def test_swap_moves_every_balance_to_the_minor_unit(rig: Rig) -> None:
    await _funded(rig)
    result = await rig.wallet.swaps.create("u1", "USDT", "UGX", "10.5", "s1")
    # 10.5 USDT * 3700 * (1 - 0.01) = 38461.5 UGX, rounded down to UGX's 0 decimals
    assert (result["state"], result["to_amount"]) == ("completed", Decimal("38461"))
    assert await _state(rig) == {
        "RESERVE_USDT_CRYPTO": (1_010_500_000, 0),
        "RESERVE_UGX_FIAT": (10_000_000 - 38_461, 0),
        "USER_u1_USDT": (89_500_000, 0),
        "USER_u1_UGX": (38_461, 0),
    }
    legs = {leg["reference_id"]: (leg["role"], leg["state"]) for leg in result["legs"]}
    assert legs == {flow_reference("swap", "s1", "from"): ("from", "released"),
                    flow_reference("swap", "s1", "to"): ("to", "committed"),
                    flow_reference("swap", "s1", "user"): ("user", "committed")}
    assert (await rig.wallet.swaps.get("s1"))["state"] == "completed"
    assert await rig.wallet.store.open_count() == 0


async def test_duplicate_swap_request_changes_nothing(rig: Rig) -> None:
    await _funded(rig)
    first = await rig.wallet.swaps.create("u1", "USDT", "UGX", "10", "s1")
    events = len(rig.money_events())
    again = await rig.wallet.swaps.create("u1", "USDT", "UGX", "10.0", "s1")
    assert again == first
    assert len(rig.money_events()) == events
    with pytest.raises(ReferenceConflict, match="already used for a different swap"):
        await rig.wallet.swaps.create("u1", "USDT", "UGX", "11", "s1")
    assert (await _state(rig))["USER_u1_USDT"] == (90_000_000, 0)


async def test_rounding_down_never_creates_money(rig: Rig) -> None:
    await _funded(rig)
    with pytest.raises(InvalidRequest, match="less than one minor unit of UGX"):
        await rig.wallet.swaps.create("u1", "USDT", "UGX", "0.000001", "tiny")
    before = await _state(rig)
    # 1.000001 USDT -> 3663.003663 UGX: the user gets 3663
    result = await rig.wallet.swaps.create("u1", "USDT", "UGX", "1.000001", "s2")
    assert result["to_amount"] == Decimal("3663")
    after = await _state(rig)
    assert after["USER_u1_UGX"][0] - before["USER_u1_UGX"][0] == 3663
    assert before["RESERVE_UGX_FIAT"][0] - after["RESERVE_UGX_FIAT"][0] == 3663


@pytest.mark.parametrize("leg", ["to", "from"])
async def test_insufficient_reserve_on_either_leg_is_409_and_rolls_back(
        rig: Rig, leg: str) -> None:
    if leg == "to":
        await _funded(rig, ugx_reserve="1000")
    else:
        await _funded(rig, usdt_reserve="5")
    before = await _state(rig)
    events = len(rig.money_events())
    with pytest.raises(InsufficientReserve) as info:
        await rig.wallet.swaps.create("u1", "USDT", "UGX", "10", "s1")
    body = info.value.to_dict()
    assert info.value.status_code == 409
    if leg == "to":
        assert body["error"] == "Insufficient reserve balance. Required: 36630.0, Available: 1000.0"
        assert body["reserve_status"]["is_sufficient"] is False
        assert body["reserve_status"]["required_amount"] == Decimal("36630")
    else:
        assert body["error"] == "Insufficient reserve balance. Required: 10.0, Available: 5.0"
    assert body["success"] is False and body["leg"] == leg
    assert await _state(rig) == before
    assert len(rig.money_events()) == events  # nothing was held
    view = await rig.wallet.swaps.get("s1")
    assert view["state"] == "failed"
    assert {leg["state"] for leg in view["legs"]} == {"none"}
    with pytest.raises(RecordedFailure) as repeat:  # a repeat gets the same answer
        await rig.wallet.swaps.create("u1", "USDT", "UGX", "10", "s1")
    assert (repeat.value.status_code, repeat.value.to_dict()) == (409, body)


async def test_insufficient_user_funds_rolls_back(rig: Rig) -> None:
    await _funded(rig, user_usdt="3")
    before = await _state(rig)
    with pytest.raises(InsufficientFunds, match=r"^Insufficient funds. Required: 10.0, "
                                                r"Available: 3.0$") as info:
        await rig.wallet.swaps.create("u1", "USDT", "UGX", "10", "s1")
    assert info.value.status_code == 409
    assert await _state(rig) == before


async def test_quote_is_honoured_until_it_expires(rig: Rig) -> None:
    await _funded(rig)
    quote = await rig.wallet.quotes.create("USDT", "UGX", "2")
    assert quote.to_dict()["to_amount"] == Decimal("7326")
    assert quote.expires_ms == rig.clock.now_ms + limits.quote_ttl_s * 1000
    rig.wallet.prices.pairs[("USDT", "UGX")] = rig.wallet.prices.rate("USDT", "KES")  # moves
    done = await rig.wallet.swaps.create("u1", "USDT", "UGX", "2", "s1", quote.quote_id)
    assert done["to_amount"] == Decimal("7326")
    with pytest.raises(InvalidRequest, match="another pair or amount"):
        await rig.wallet.swaps.create("u1", "USDT", "UGX", "3", "s2", quote.quote_id)
    rig.clock.advance_s(limits.quote_ttl_s)
    with pytest.raises(QuoteExpired, match="unknown or expired"):
        await rig.wallet.swaps.create("u1", "USDT", "UGX", "2", "s3", quote.quote_id)
    again = await rig.wallet.swaps.create("u1", "USDT", "UGX", "2", "s1", quote.quote_id)
    assert again["state"] == "completed"  # a repeat answers after the quote expired
    assert (await _state(rig))["USER_u1_UGX"] == (7326, 0)


class Crash(Exception):
    pass


async def test_crash_between_the_two_debits_is_undone_after_the_ttl(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    await _funded(rig)
    before = await _state(rig)
    real = swap.commit_hold
    calls = []

    async def crashing(engine: Any, ref: str, amount: int, meta: Any) -> bool:
        calls.append(ref)
        if ref == flow_reference("swap", "s1", "to"):
            raise Crash
        return await real(engine, ref, amount, meta)

    monkeypatch.setattr(swap, "commit_hold", crashing)
    with pytest.raises(Crash):
        await rig.wallet.swaps.create("u1", "USDT", "UGX", "10", "s1")
    monkeypatch.setattr(swap, "commit_hold", real)
    mid = await _state(rig)
    assert mid["USER_u1_USDT"] == (90_000_000, 0)  # the user's hold was committed
    assert (await rig.wallet.recover()).looked_at_count == 0  # not due yet
    rig.clock.advance_s(limits.swap_hold_ttl_s)
    assert (await rig.wallet.recover()).settled_count == 1
    assert await _state(rig) == before  # refunded, holds released: nothing created or lost
    assert (await rig.wallet.swaps.get("s1"))["state"] == "failed"


async def test_crash_after_both_debits_is_finished_by_recover(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    await _funded(rig)
    real_top_up = rig.engine.ops.top_up

    def crashing(*args: Any, **kwargs: Any) -> Any:
        raise Crash

    monkeypatch.setattr(rig.engine.ops, "top_up", crashing)
    with pytest.raises(Crash):
        await rig.wallet.swaps.create("u1", "USDT", "UGX", "10", "s1")
    monkeypatch.setattr(rig.engine.ops, "top_up", real_top_up)
    rig.clock.advance_s(limits.swap_hold_ttl_s)
    await rig.wallet.recover()
    assert (await rig.wallet.swaps.get("s1"))["state"] == "completed"
    assert await _state(rig) == {
        "RESERVE_USDT_CRYPTO": (1_010_000_000, 0), "RESERVE_UGX_FIAT": (10_000_000 - 36_630, 0),
        "USER_u1_USDT": (90_000_000, 0), "USER_u1_UGX": (36_630, 0)}
