"""Accounts, balances and the sufficiency check, on fakeredis and the real Redis."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.errors import InvalidRequest, PrecisionError, UnknownCurrency
from tests.engine_helpers import Ids, journal, make_service, nth_id

RUN_ON_CLUSTER = True  # the backend fixture adds a local 3-master Redis Cluster


def test_get_reserve_account_is_created_once(backend: dict[str, Any]) -> None:
    service = make_service(backend)
    first = service.get_reserve_account("USDT", "crypto")
    account_id = nth_id(service, "RESERVE_USDT_CRYPTO", 1)  # 1 on one shard
    assert first == {"label": "RESERVE_USDT_CRYPTO", "currency": "USDT", "account_type": "crypto",
                     "account_id": account_id, "account_number": f"RUSDTc{account_id:04d}"}
    assert type(first["account_id"]) is int
    service.clear_cache()  # ask Redis again, not the in-process cache
    assert service.get_reserve_account("usdt", "CRYPTO") == first
    # a second process (a fresh service) sees the same account
    assert make_service(backend).get_reserve_account("USDT", "crypto") == first
    opens = [e for e in journal(service) if e.op == "account_open"]
    assert len(opens) == 1
    assert opens[0].account == "RESERVE_USDT_CRYPTO"
    assert opens[0].extra == {"cur": "USDT", "type": "crypto", "kind": "reserve",
                              "aid": str(account_id), "num": f"RUSDTc{account_id:04d}"}


def test_accounts_get_increasing_ids(backend: dict[str, Any]) -> None:
    service = make_service(backend)
    usdt = service.get_reserve_account("USDT", "crypto")
    ugx = service.get_reserve_account("UGX", "fiat")
    btc = service.get_reserve_account("BTC")  # the registry supplies the type
    ids = Ids(service)  # (1, 2, 3) on one shard
    expected = tuple(ids.next(f"RESERVE_{c}") for c in ("USDT_CRYPTO", "UGX_FIAT", "BTC_CRYPTO"))
    assert (usdt["account_id"], ugx["account_id"], btc["account_id"]) == expected
    assert ugx["label"] == "RESERVE_UGX_FIAT"
    assert ugx["account_number"] == f"RUGXf{expected[1]:04d}"
    assert btc["account_number"] == f"RBTCc{expected[2]:04d}"
    assert btc["account_type"] == "crypto"


@pytest.mark.parametrize(("currency", "account_type", "error", "message"), [
    ("XYZ", "crypto", UnknownCurrency, "Unknown currency: XYZ"),
    ("USDT", "fiat", UnknownCurrency, "USDT is a crypto currency, not fiat"),
    ("UGX", "crypto", UnknownCurrency, "UGX is a fiat currency, not crypto"),
    ("USDT", "bank", UnknownCurrency, "Unknown account type: bank (expected crypto or fiat)"),
])
def test_account_errors_create_nothing(backend: dict[str, Any], currency: str,
                                       account_type: str, error: type,
                                       message: str) -> None:
    service = make_service(backend)
    for call in (lambda: service.get_reserve_account(currency, account_type),
                 lambda: service.get_reserve_balance(currency, account_type),
                 lambda: service.reserve_amount(currency, "1", account_type, "r1", "swap"),
                 lambda: service.top_up_reserve(currency, "1", account_type, "t1"),
                 lambda: service.withdraw_from_reserve(currency, "1", account_type, "w1"),
                 lambda: service.check_reserve_sufficiency(currency, "1", account_type)):
        with pytest.raises(error) as info:
            call()
        assert info.value.message == message
        assert info.value.status_code == 404
    assert journal(service) == []
    assert list(backend["sync"].scan_iter(match=f"{backend['settings'].key_prefix}:*")) == []


def test_balance_of_a_new_account_is_zero(backend: dict[str, Any]) -> None:
    service = make_service(backend)
    account_id = nth_id(service, "RESERVE_USDT_CRYPTO", 1)
    assert service.get_reserve_balance("USDT", "crypto") == {
        "currency": "USDT", "account_type": "crypto",
        "total_balance": Decimal("0"), "available_balance": Decimal("0"),
        "locked_balance": Decimal("0"), "utilization_percentage": Decimal("0.0"),
        "status": "healthy", "account_id": account_id, "account_number": f"RUSDTc{account_id:04d}",
    }


def test_balance_after_top_up_and_hold(backend: dict[str, Any]) -> None:
    service = make_service(backend)
    service.top_up_reserve("USDT", "10000", "crypto", "seed")
    service.reserve_amount("USDT", "2500.5", "crypto", "h1", "swap")
    balance = service.get_reserve_balance("USDT", "crypto")
    assert balance["total_balance"] == Decimal("10000")
    assert balance["locked_balance"] == Decimal("2500.5")
    assert balance["available_balance"] == Decimal("7499.5")
    assert balance["utilization_percentage"] == Decimal("25.00")  # 25.005, half-even
    assert balance["status"] == "healthy"
    for value in ("total_balance", "locked_balance", "available_balance",
                  "utilization_percentage"):
        assert isinstance(balance[value], Decimal)


def test_all_reserves_lists_every_registry_currency(backend: dict[str, Any]) -> None:
    service = make_service(backend)
    service.top_up_reserve("KES", "12.34", "fiat", "seed")
    balances = {b.account.label: b for b in service.get_all_reserves()}
    assert set(balances) == {f"RESERVE_{c}_{t}" for c, t in (
        ("USDT", "CRYPTO"), ("USDC", "CRYPTO"), ("BTC", "CRYPTO"), ("ETH", "CRYPTO"),
        ("UGX", "FIAT"), ("KES", "FIAT"), ("USD", "FIAT"), ("EUR", "FIAT"), ("NGN", "FIAT"))}
    assert balances["RESERVE_KES_FIAT"].total_minor == 1234
    assert balances["RESERVE_USD_FIAT"].total_minor == 0


@pytest.mark.parametrize(("locked", "percent", "status"), [
    ("0", Decimal("0.00"), "healthy"),
    ("49", Decimal("49.00"), "healthy"),
    ("50", Decimal("50.00"), "moderate"),
    ("74.99", Decimal("74.99"), "moderate"),
    ("75", Decimal("75.00"), "warning"),
    ("89.99", Decimal("89.99"), "warning"),
    ("90", Decimal("90.00"), "critical"),
    ("100", Decimal("100.00"), "critical"),
])
def test_sufficiency_status_thresholds(backend: dict[str, Any], locked: str, percent: Decimal,
                                       status: str) -> None:
    service = make_service(backend)
    service.top_up_reserve("USD", "100", "fiat", "seed")
    if locked != "0":
        service.reserve_amount("USD", locked, "fiat", "h", "swap")
    available = Decimal(100) - Decimal(locked)
    check = service.check_reserve_sufficiency("USD", "0.01", "fiat", "swap")
    assert check == {
        "is_sufficient": available >= Decimal("0.01"),
        "required_amount": Decimal("0.01"),
        "available_amount": available,
        "utilization_percentage": percent,
        "status": status,
    }
    assert service.get_reserve_balance("USD", "fiat")["status"] == status


def test_sufficiency_is_exact_at_the_edge(backend: dict[str, Any]) -> None:
    service = make_service(backend)
    service.top_up_reserve("USDT", "10", "crypto", "seed")
    assert service.check_reserve_sufficiency("USDT", "10", "crypto")["is_sufficient"] is True
    over = service.check_reserve_sufficiency("USDT", "10.000001", "crypto")
    assert over["is_sufficient"] is False
    assert over["required_amount"] == Decimal("10.000001")
    assert over["available_amount"] == Decimal("10")


def test_sufficiency_of_an_empty_reserve(backend: dict[str, Any]) -> None:
    service = make_service(backend)
    assert service.check_reserve_sufficiency("UGX", "1000", "fiat") == {
        "is_sufficient": False, "required_amount": Decimal("1000"),
        "available_amount": Decimal("0"), "utilization_percentage": Decimal("0.0"),
        "status": "healthy",
    }


def test_sufficiency_validates_its_input(backend: dict[str, Any]) -> None:
    service = make_service(backend)
    with pytest.raises(PrecisionError) as info:
        service.check_reserve_sufficiency("UGX", "0.5", "fiat")
    assert info.value.message == "amount 0.5 has more than 0 decimal places, the precision of UGX"
    with pytest.raises(InvalidRequest) as info2:
        service.check_reserve_sufficiency("UGX", "5", "fiat", "bad op!")
    assert info2.value.message == ("operation_type must be 1-64 characters of letters, digits "
                                   "and _ . -")
