"""References and amounts at the seams (issue 15, items 1, 2, 8 and 10): every reference a flow
uses is valid whatever the caller's, no caller can write one, every reference the API accepts is
reachable through every route that takes one, and decimal strings are JSON numbers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import limits as engine_limits
from engine.errors import InvalidRequest, ReferenceConflict
from engine.money import parse_decimal
from engine.references import PATTERN, check_reference, flow_reference
from engine.service import ReserveService
from tests.engine_helpers import journal, make_service, minor_balance
from tests.flows_support import Rig, make_rig

LONGEST = "R" * engine_limits.reference_length_max
SWAP_LEGS = ("from", "to", "user", "credit_from", "credit_to", "refund_user", "refund_to",
             "refund_from")
MM_LEGS = ("crypto", "credit_user", "collected", "crypto_late", "fiat", "user", "credit_crypto",
           "fiat_late", "user_late", "crypto_refund", "fiat_refund", "user_refund")
LABELS = ["RESERVE_USDT_CRYPTO", "RESERVE_UGX_FIAT", "USER_u1_USDT", "USER_u1_UGX"]
PHONE = "+256700000001"


@pytest.fixture
def rig(backend: dict[str, Any], async_redis: Any) -> Rig:
    return make_rig(backend, async_redis)


async def _funded(rig: Rig) -> None:
    await rig.seed_reserve("USDT", "1000")
    await rig.seed_reserve("UGX", "10000000")
    await rig.wallet.users.deposit("u1", "USDT", "100", "dep-u1")


async def _state(rig: Rig) -> dict[str, tuple[int, int]]:
    return {label: await rig.minor(label) for label in LABELS}


async def _callback(rig: Rig, view: dict[str, Any], status: str) -> dict[str, Any]:
    body, headers = rig.provider.signed_callback(view["provider_tx_id"], status)
    return await rig.wallet.mobile_money.callback(body, headers)


# -- 1. flows debit and never credit ------------------------------------------------------------

_public_references = st.from_regex(PATTERN, fullmatch=True)


@given(ref=_public_references)
def test_every_flow_reference_is_valid_bounded_and_internal(ref: str) -> None:
    """Whatever the caller's valid reference, each step's reference passes the engine's check,
    fits the ledger's column, and no caller can send its text."""
    derived = [flow_reference("swap", ref, leg) for leg in SWAP_LEGS]
    derived += [flow_reference("mm", ref, leg) for leg in MM_LEGS]
    assert len(set(derived)) == len(derived)  # swap and mm legs never share a reference
    for step in derived:
        assert check_reference(step) == step
        assert len(step) <= engine_limits.reference_length_max
        assert step.startswith("~")
        with pytest.raises(InvalidRequest):
            check_reference(str(step))  # the same text from a request


def test_flow_references_are_stable_and_distinct_per_reference() -> None:
    assert flow_reference("swap", "s1", "user") == flow_reference("swap", "s1", "user")
    # the head of a long reference is cut, but the digest covers all of it
    assert flow_reference("swap", LONGEST, "to") != flow_reference("swap", LONGEST[:-1] + "S", "to")
    assert flow_reference("swap", "s1", "user") != flow_reference("mm", "s1", "user")


@pytest.mark.parametrize("length", [1, 117, 123, engine_limits.reference_length_max])
async def test_a_swap_with_any_valid_reference_completes(rig: Rig, length: int) -> None:
    """117-123 characters used to debit the user and the reserve, then fail the credit."""
    await _funded(rig)
    ref = "s" * length
    view = await rig.wallet.swaps.create("u1", "USDT", "UGX", "10", ref)
    # 10 USDT * 3700 * (1 - 0.01) = 36630 UGX
    assert (view["state"], view["reference_id"], view["to_amount"]) == (
        "completed", ref, Decimal("36630"))
    assert {leg["role"]: leg["state"] for leg in view["legs"]} == {
        "from": "released", "to": "committed", "user": "committed"}
    assert await _state(rig) == {"RESERVE_USDT_CRYPTO": (1_010_000_000, 0),
                                 "RESERVE_UGX_FIAT": (10_000_000 - 36_630, 0),
                                 "USER_u1_USDT": (90_000_000, 0),
                                 "USER_u1_UGX": (36_630, 0)}
    assert await rig.wallet.store.open_count() == 0


@pytest.mark.parametrize("length", [115, engine_limits.reference_length_max])
async def test_a_buy_and_a_sell_with_any_valid_reference_complete(rig: Rig, length: int) -> None:
    """115-123 characters used to fail the credit after the debit, on the success callback."""
    await _funded(rig)
    buy = await rig.wallet.mobile_money.buy("u1", "UGX", "USDT", "37000", PHONE, "b" * length)
    done = await _callback(rig, buy, "success")
    assert (done["state"], done["reference_id"]) == ("completed", "b" * length)
    sell = await rig.wallet.mobile_money.sell("u1", "USDT", "UGX", "10", PHONE, "s" * length)
    done = await _callback(rig, sell, "success")
    assert (done["state"], done["reference_id"]) == ("completed", "s" * length)
    assert {leg["role"]: leg["state"] for leg in done["legs"]} == {"fiat": "committed",
                                                                   "user": "committed"}
    # buy: 37000 UGX -> 9.8901 USDT; sell: 10 USDT -> 36630 UGX
    assert await _state(rig) == {
        "RESERVE_USDT_CRYPTO": (1_000_000_000 - 9_890_100 + 10_000_000, 0),
        "RESERVE_UGX_FIAT": (10_000_000 + 37_000 - 36_630, 0),
        "USER_u1_USDT": (100_000_000 + 9_890_100 - 10_000_000, 0),
        "USER_u1_UGX": (0, 0)}
    assert await rig.wallet.store.open_count() == 0


# -- 2. caller references share the namespace of internal ones ---------------------------------

async def test_a_deposit_named_like_a_swaps_credit_does_not_take_its_place(rig: Rig) -> None:
    """The deposit sw1_credit_to (same account, same amount) was taken for swap sw1's credit:
    the user paid 10 USDT and got nothing."""
    await _funded(rig)
    deposit = await rig.wallet.users.deposit("u1", "UGX", "36630", "sw1_credit_to")
    assert deposit["applied"] is True
    view = await rig.wallet.swaps.create("u1", "USDT", "UGX", "10", "sw1")
    assert view["state"] == "completed"
    assert await rig.minor("USER_u1_UGX") == (2 * 36_630, 0)  # the deposit and the swap's credit
    assert await rig.minor("USER_u1_USDT") == (90_000_000, 0)


async def test_a_caller_cannot_name_a_flows_step(rig: Rig) -> None:
    """A pending sell's holds: no request can read, release, commit or reuse them by name."""
    await _funded(rig)
    sell = await rig.wallet.mobile_money.sell("u1", "USDT", "UGX", "10", PHONE, "sl1")
    before = await _state(rig)
    engine = rig.engine
    for leg in sell["legs"]:
        assert leg["state"] == "pending"
        text = str(leg["reference_id"])  # what a request would carry
        for call in (lambda: engine.release_reserve(text), lambda: engine.commit_reserve(text),
                     lambda: engine.get_hold(text),
                     lambda: rig.wallet.users.deposit("u1", "USDT", "1", text)):
            with pytest.raises(InvalidRequest) as info:
                await call()
            assert info.value.details == {"code": "invalid_reference"}
        # the old names are plain references, unrelated to the sell
        with pytest.raises(Exception, match=f"Hold sl1_{leg['role']} not found"):
            await engine.release_reserve(f"sl1_{leg['role']}")
    assert await _state(rig) == before
    done = await _callback(rig, sell, "success")
    assert done["state"] == "completed"


async def test_a_swap_and_a_sell_with_one_reference_have_their_own_legs(rig: Rig) -> None:
    """Both held the user's funds under x_user: the sell was refused as a conflict."""
    await _funded(rig)
    assert (await rig.wallet.swaps.create("u1", "USDT", "UGX", "10", "x"))["state"] == "completed"
    sell = await rig.wallet.mobile_money.sell("u1", "USDT", "UGX", "10", PHONE, "x")
    assert sell["state"] == "pending"
    assert await rig.minor("USER_u1_USDT") == (90_000_000, 10_000_000)


@pytest.fixture
def service(backend: dict[str, Any]) -> ReserveService:
    svc = make_service(backend)
    svc.top_up_reserve("UGX", "10000", "fiat", "seed")
    return svc


def test_a_hold_repeat_must_match_its_operation_type(service: ReserveService) -> None:
    first = service.reserve_amount("UGX", "100", "fiat", "r1", "swap")
    assert first["status"] == "healthy"
    events = len(journal(service))
    with pytest.raises(ReferenceConflict):
        service.reserve_amount("UGX", "100", "fiat", "r1", "payout")
    ops = service.ops
    spec = ops.reserve_spec("UGX", "fiat")
    with pytest.raises(ReferenceConflict):
        service.run(ops.reserve_many([(spec, 100, "r1")], "payout"))
    repeat = service.run(ops.reserve(spec, 100, "r1", "swap"))
    assert repeat.applied is False
    assert minor_balance(service, "UGX", "fiat") == (10_000, 100)
    assert len(journal(service)) == events


def test_a_top_up_and_a_withdrawal_never_repeat_each_other(service: ReserveService) -> None:
    """A transfer's repeat must match its kind and amount (per account)."""
    events = len(journal(service))
    with pytest.raises(ReferenceConflict):
        service.withdraw_from_reserve("UGX", "10000", "fiat", "seed")  # the top-up's reference
    with pytest.raises(ReferenceConflict):
        service.top_up_reserve("UGX", "1", "fiat", "seed")  # another amount
    assert minor_balance(service, "UGX", "fiat") == (10_000, 0)
    assert len(journal(service)) == events


# -- 10. decimal strings are JSON numbers ------------------------------------------------------

@pytest.mark.parametrize("text", ["1_000", "١", "１０", "+1", ".5", "5.", "01", "1e", "1.e3",
                                  "\u00a01", "1\u2003", "0x10", "1,5", "1 000", ""])
def test_decimal_strings_outside_the_json_number_grammar_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_decimal(text)
    assert info.value.message == (
        f"amount must be a number, got {text!r} (a decimal string is written as a JSON number, "
        'in ASCII digits: "12.5", "1e3")')


@pytest.mark.parametrize(("text", "value"), [
    ("1e3", Decimal(1000)), ("1E+3", Decimal(1000)), ("2.5e-1", Decimal("0.25")),
    ("-0.5", Decimal("-0.5")), ("0", Decimal(0)), (" 42\n", Decimal(42)), ("\t7\r", Decimal(7)),
])
def test_decimal_strings_in_the_json_number_grammar_are_read(text: str, value: Decimal) -> None:
    assert parse_decimal(text) == value


def test_a_decimal_string_locks_what_the_same_json_number_locks(service: ReserveService) -> None:
    """'1_000' locked 1,000, '１０' locked 10: now refused, and nothing is locked."""
    for text in ("1_000", "١", "１０"):
        with pytest.raises(InvalidRequest):
            service.reserve_amount("UGX", text, "fiat", f"d-{len(text)}", "swap")
    assert minor_balance(service, "UGX", "fiat") == (10_000, 0)
    service.reserve_amount("UGX", "1e3", "fiat", "e-string", "swap")
    service.reserve_amount("UGX", Decimal("1e3"), "fiat", "e-number", "swap")
    assert minor_balance(service, "UGX", "fiat") == (10_000, 2_000)
