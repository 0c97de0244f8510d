"""engine.money: exact conversion at the edges, utilization and status in exact arithmetic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine import limits
from engine.errors import InvalidRequest, PrecisionError
from engine.money import exact_json, from_minor, json_number, parse_decimal, reserve_status, to_minor, \
    utilization_percent

JSON_NUMBER_HINT = ' (a decimal string is written as a JSON number, in ASCII digits: "12.5", "1e3")'


@pytest.mark.parametrize(("amount", "decimals", "minor"), [
    ("1.5", 6, 1_500_000),
    (Decimal("0.000001"), 6, 1),
    ("1E-6", 6, 1),
    (" 42 ", 0, 42),
    (7, 2, 700),
    ("1.0", 0, 1),
    ("1.500000", 6, 1_500_000),
    ("0.00000001", 8, 1),
    (Decimal("9007199254.740991"), 6, limits.amount_minor_max),
    (limits.amount_minor_max, 0, 2**53 - 1),
])
def test_to_minor_exact(amount: object, decimals: int, minor: int) -> None:
    result = to_minor(amount, decimals, "X")
    assert result == minor
    assert type(result) is int


@pytest.mark.parametrize(("amount", "decimals", "currency", "message"), [
    ("0.5", 0, "UGX", "amount 0.5 has more than 0 decimal places, the precision of UGX"),
    ("1.50", 0, "UGX", "amount 1.50 has more than 0 decimal places, the precision of UGX"),
    ("0.0000001", 6, "USDT", "amount 1E-7 has more than 6 decimal places, the precision of USDT"),
    ("1.001", 2, "KES", "amount 1.001 has more than 2 decimal places, the precision of KES"),
    # far below the decimal context's smallest exponent: once an uncaught Inexact (a 500)
    ("1e-99999999", 6, "USDT", "amount 1E-99999999 has more than 6 decimal places, the precision of USDT"),
])
def test_to_minor_refuses_extra_decimals(amount: str, decimals: int, currency: str,
                                         message: str) -> None:
    with pytest.raises(PrecisionError) as info:
        to_minor(amount, decimals, currency)
    assert info.value.message == message
    assert info.value.status_code == 400


@pytest.mark.parametrize(("amount", "message"), [
    ("0", "amount must be greater than zero"),
    (0, "amount must be greater than zero"),
    ("-1", "amount must be greater than zero"),
    (Decimal("-0.000001"), "amount must be greater than zero"),
    ("NaN", "amount must be a finite number"),
    ("Infinity", "amount must be a finite number"),
    ("-Infinity", "amount must be a finite number"),
    (Decimal("NaN"), "amount must be a finite number"),
    ("abc", "amount must be a number, got 'abc'" + JSON_NUMBER_HINT),
    ("", "amount must be a number, got ''" + JSON_NUMBER_HINT),
    (1.5, "amount must be given as a decimal string or exact number, not a float"),
    (100.0, "amount must be given as a decimal string or exact number, not a float"),
    (True, "amount must be a number"),
    ([1], "amount must be a number"),
    (None, "amount is required"),
    (2**53, "amount 9007199254740992 exceeds the largest supported amount"),
    ("1E+21", "amount 1E+21 exceeds the largest supported amount"),
])
def test_to_minor_refuses_bad_amounts(amount: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_minor(amount, 0, "UGX")
    assert info.value.message == message


def test_to_minor_limit_counts_minor_units_not_major() -> None:
    with pytest.raises(InvalidRequest, match="exceeds the largest supported amount"):
        to_minor("9007199254.740992", 6, "USDT")  # 2^53 minor units


def test_field_name_is_used_in_messages() -> None:
    with pytest.raises(InvalidRequest) as info:
        to_minor("-5", 2, "USD", field="commit_amount")
    assert info.value.message == "commit_amount must be greater than zero"
    with pytest.raises(InvalidRequest) as info:
        parse_decimal(None, "ttl")
    assert info.value.message == "ttl is required"


@pytest.mark.parametrize(("minor", "decimals", "major"), [
    (1, 6, Decimal("0.000001")),
    (1_500_000, 6, Decimal("1.5")),
    (0, 2, Decimal("0")),
    (12345, 0, Decimal("12345")),
    (2**53 - 1, 8, Decimal("90071992.54740991")),
])
def test_from_minor_is_exact(minor: int, decimals: int, major: Decimal) -> None:
    result = from_minor(minor, decimals)
    assert result == major
    assert isinstance(result, Decimal)
    if minor:
        assert to_minor(result, decimals, "X") == minor  # the round trip is exact


@pytest.mark.parametrize(("value", "text"), [
    (Decimal("1000"), "1000.0"),
    (Decimal("1000.000000"), "1000.0"),
    (Decimal("1E+3"), "1000.0"),
    (Decimal("0"), "0.0"),
    (Decimal("0.000000"), "0.0"),
    (Decimal("500"), "500.0"),
    (Decimal("0.000001"), "0.000001"),
    (Decimal("1E-7"), "0.0000001"),
    (Decimal("12.50"), "12.5"),
    (Decimal("90071992.54740991"), "90071992.54740991"),
])
def test_json_number(value: Decimal, text: str) -> None:
    assert json_number(value) == text


@pytest.mark.parametrize(("locked", "total", "percent"), [
    (0, 0, Decimal("0.0")),
    (0, 100, Decimal("0.00")),
    (1, 3, Decimal("33.33")),
    (2, 3, Decimal("66.67")),
    (100, 100, Decimal("100.00")),
    (1, 2**53 - 1, Decimal("0.00")),
    (2**53 - 2, 2**53 - 1, Decimal("100.00")),
])
def test_utilization(locked: int, total: int, percent: Decimal) -> None:
    result = utilization_percent(locked, total)
    assert result == percent
    assert isinstance(result, Decimal)


@pytest.mark.parametrize(("locked", "total", "status"), [
    (0, 0, "healthy"),
    (0, 100, "healthy"),
    (49, 100, "healthy"),
    (50, 100, "moderate"),
    (74, 100, "moderate"),
    (75, 100, "warning"),
    (89, 100, "warning"),
    (90, 100, "critical"),
    (100, 100, "critical"),
    # boundaries by exact integers, where a rounded percentage would cross the line
    (499_999, 1_000_000, "healthy"),
    (749_999_999, 1_000_000_000, "moderate"),
    (8_999_999_999_999, 10_000_000_000_000, "warning"),
    (2, 3, "moderate"),
])
def test_reserve_status_thresholds(locked: int, total: int, status: str) -> None:
    assert reserve_status(locked, total) == status


def test_exact_json_writes_what_json_dumps_would_and_decimals_exactly() -> None:
    import datetime
    import json
    from enum import StrEnum

    class Side(StrEnum):
        buy = "buy"

    plain = {"s": "caf\u00e9 \"q\" \\ \n", "i": -12, "big": 2**60, "t": True, "f": False,
             "n": None, "l": [1, "x", [], {}], "tu": (1, 2), 7: "int key", "e": Side.buy,
             "nested": {"a": [{"b": None}]}}
    assert exact_json(plain) == json.dumps(plain, separators=(",", ":"))
    money = {"amount": Decimal("10000"), "small": Decimal("0.000001"), "list": [Decimal("12.50")]}
    assert exact_json(money) == '{"amount":10000.0,"small":0.000001,"list":[12.5]}'
    assert json.loads(exact_json(money), parse_float=Decimal) == {
        "amount": Decimal("10000.0"), "small": Decimal("0.000001"), "list": [Decimal("12.5")]}
    when = datetime.date(2026, 12, 2)
    assert exact_json({"d": when}, default=str) == '{"d":"2026-12-02"}'
    with pytest.raises(TypeError):
        exact_json({"d": when})
