"""Bad input gets a clear 400 error and changes nothing, at every entry point."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from engine.errors import InvalidRequest, LimitExceeded, PrecisionError
from engine.service import ReserveService
from tests.engine_helpers import journal, make_service, minor_balance

RUN_ON_CLUSTER = True  # the backend fixture adds a local 3-master Redis Cluster

REFERENCE_RULE = ("1-128 characters of letters, digits and _ . : @ / + = -, with no part between "
                  "slashes that is . or ..")
JSON_NUMBER_HINT = ' (a decimal string is written as a JSON number, in ASCII digits: "12.5", "1e3")'

BAD_AMOUNTS = [
    ("0", "amount must be greater than zero"),
    (0, "amount must be greater than zero"),
    ("-5", "amount must be greater than zero"),
    (Decimal("-0.01"), "amount must be greater than zero"),
    ("NaN", "amount must be a finite number"),
    ("Infinity", "amount must be a finite number"),
    ("-Infinity", "amount must be a finite number"),
    ("ten", "amount must be a number, got 'ten'" + JSON_NUMBER_HINT),
    (1.5, "amount must be given as a decimal string or exact number, not a float"),
    (10.0, "amount must be given as a decimal string or exact number, not a float"),
    (None, "amount is required"),
    (True, "amount must be a number"),
    ("0.5", "amount 0.5 has more than 0 decimal places, the precision of UGX"),
    ("100.01", "amount 100.01 has more than 0 decimal places, the precision of UGX"),
    (2**53, "amount 9007199254740992 exceeds the largest supported amount"),
    ("1E+25", "amount 1E+25 exceeds the largest supported amount"),
]


@pytest.fixture
def service(backend: dict[str, Any]) -> ReserveService:
    svc = make_service(backend)
    svc.top_up_reserve("UGX", "10000", "fiat", "seed")
    svc.reserve_amount("UGX", "100", "fiat", "held", "swap")
    return svc


def assert_unchanged(service: ReserveService, call: Callable[[], Any], error: type,
                     message: str) -> None:
    before = (journal(service), minor_balance(service, "UGX", "fiat"))
    with pytest.raises(error) as info:
        call()
    assert info.value.message == message
    assert info.value.status_code == 400
    assert (journal(service), minor_balance(service, "UGX", "fiat")) == before


@pytest.mark.parametrize(("amount", "message"), BAD_AMOUNTS)
def test_bad_amounts_everywhere(service: ReserveService, amount: Any, message: str) -> None:
    calls = [
        lambda: service.reserve_amount("UGX", amount, "fiat", "r1", "swap"),
        lambda: service.top_up_reserve("UGX", amount, "fiat", "t1"),
        lambda: service.withdraw_from_reserve("UGX", amount, "fiat", "w1"),
        lambda: service.check_reserve_sufficiency("UGX", amount, "fiat"),
    ]
    if amount is not None:  # commit without an amount commits the whole hold
        calls.append(lambda: service.commit_reserve("held", amount))
    for call in calls:
        assert_unchanged(service, call, InvalidRequest, message)
    assert service.get_hold("held")["state"] == "pending"


def test_precision_follows_the_currency(service: ReserveService) -> None:
    service.top_up_reserve("USDT", "1", "crypto", "seed")
    assert_unchanged(service, lambda: service.reserve_amount(
        "USDT", "0.0000001", "crypto", "r1", "swap"), PrecisionError,
        "amount 1E-7 has more than 6 decimal places, the precision of USDT")
    assert service.reserve_amount("USDT", "0.000001", "crypto", "r1", "swap")[
        "reserved_amount"] == Decimal("0.000001")
    service.top_up_reserve("BTC", "0.00000001", "crypto", "sat")
    assert minor_balance(service, "BTC", "crypto") == (1, 0)
    with pytest.raises(PrecisionError, match="more than 8 decimal places, the precision of BTC"):
        service.top_up_reserve("BTC", "0.000000001", "crypto", "sat2")
    with pytest.raises(PrecisionError, match="more than 2 decimal places, the precision of KES"):
        service.top_up_reserve("KES", "0.001", "fiat", "k")


def test_largest_amount_in_minor_units(service: ReserveService) -> None:
    # 2^53 - 1 minor units is the largest amount; one more is refused before Lua
    assert_unchanged(service, lambda: service.top_up_reserve(
        "USDT", "9007199254.740992", "crypto", "big"), InvalidRequest,
        "amount 9007199254.740992 exceeds the largest supported amount")
    service.top_up_reserve("USDT", "9007199254.740991", "crypto", "big")
    assert minor_balance(service, "USDT", "crypto") == (2**53 - 1, 0)
    # and a total can never pass it either
    with pytest.raises(LimitExceeded) as info:
        service.top_up_reserve("USDT", "0.000001", "crypto", "one-more")
    assert info.value.message == "Balance of RESERVE_USDT_CRYPTO would exceed the supported maximum"
    assert info.value.status_code == 409
    assert minor_balance(service, "USDT", "crypto") == (2**53 - 1, 0)
    service.reserve_amount("USDT", "9007199254.740991", "crypto", "all", "swap")
    assert minor_balance(service, "USDT", "crypto") == (2**53 - 1, 2**53 - 1)


@pytest.mark.parametrize("reference", [
    "", "has space", "x" * 129, "semi;colon", "quote'", "ü", "a|b", "new\nline", 123, None,
])
def test_bad_references(service: ReserveService, reference: Any) -> None:
    message = f"reference_id must be {REFERENCE_RULE}"
    for call in (lambda: service.reserve_amount("UGX", "1", "fiat", reference, "swap"),
                 lambda: service.release_reserve(reference),
                 lambda: service.commit_reserve(reference),
                 lambda: service.commit_reserve(reference, "1"),
                 lambda: service.get_hold(reference)):
        with pytest.raises(InvalidRequest) as info:
            call()
        assert info.value.message == message
        assert info.value.details == {"code": "invalid_reference"}
    assert_unchanged(service, lambda: service.top_up_reserve("UGX", "1", "fiat", reference),
                     InvalidRequest, f"source_reference must be {REFERENCE_RULE}")
    assert_unchanged(service, lambda: service.withdraw_from_reserve(
        "UGX", "1", "fiat", reference), InvalidRequest,
        f"destination_reference must be {REFERENCE_RULE}")


def test_every_allowed_reference_character(service: ReserveService) -> None:
    for reference in ("x" * 128, "order:42/leg@1+a=b.c_d-e", "A9"):
        service.reserve_amount("UGX", "1", "fiat", reference, "swap")
        assert service.release_reserve(reference)["hold_state"] == "released"


@pytest.mark.parametrize(("operation_type", "ttl_s", "metadata", "message"), [
    ("", None, None, "operation_type must be 1-64 characters of letters, digits and _ . -"),
    ("s w a p", None, None, "operation_type must be 1-64 characters of letters, digits and _ . -"),
    ("x" * 65, None, None, "operation_type must be 1-64 characters of letters, digits and _ . -"),
    ("swap", 0, None, "ttl_seconds must be a whole number from 1 to 604800"),
    ("swap", -1, None, "ttl_seconds must be a whole number from 1 to 604800"),
    ("swap", 604801, None, "ttl_seconds must be a whole number from 1 to 604800"),
    ("swap", Decimal("1.5"), None, "ttl_seconds must be a whole number from 1 to 604800"),
    ("swap", 1.5, None, "ttl_seconds must be an integer number of seconds"),
    ("swap", True, None, "ttl_seconds must be an integer number of seconds"),
    ("swap", "60", None, "ttl_seconds must be an integer number of seconds"),
    ("swap", None, {"note": "x" * 2100}, "metadata exceeds 2048 bytes"),
])
def test_bad_hold_options(service: ReserveService, operation_type: str, ttl_s: Any,
                          metadata: Any, message: str) -> None:
    assert_unchanged(service, lambda: service.reserve_amount(
        "UGX", "1", "fiat", "r1", operation_type, ttl_s, metadata), InvalidRequest, message)


def test_commit_amount_precision_is_the_holds_currency(service: ReserveService) -> None:
    assert_unchanged(service, lambda: service.commit_reserve("held", "99.5"), PrecisionError,
                     "amount 99.5 has more than 0 decimal places, the precision of UGX")
    assert service.commit_reserve("held", "99")["hold_state"] == "committed"
