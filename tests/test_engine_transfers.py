"""Top-ups and withdrawals: amounts, idempotency on the reference, only from available."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.errors import InsufficientReserve, ReferenceConflict
from engine.service import ReserveService
from tests.engine_helpers import make_service, minor_balance, money_events, nth_id

RUN_ON_CLUSTER = True  # the backend fixture adds a local 3-master Redis Cluster


@pytest.fixture
def service(backend: dict[str, Any]) -> ReserveService:
    return make_service(backend)


def test_top_up(service: ReserveService) -> None:
    result = service.top_up_reserve("USDT", "10000", "crypto", "bank-1")
    assert result == {"success": True, "topped_up_amount": Decimal("10000"),
                      "new_total_balance": Decimal("10000"),
                      "transaction_id": nth_id(service, "RESERVE_USDT_CRYPTO", 2)}
    second = service.top_up_reserve("USDT", "0.5", "crypto", "bank-2")
    assert second == {"success": True, "topped_up_amount": Decimal("0.5"),
                      "new_total_balance": Decimal("10000.5"),
                      "transaction_id": nth_id(service, "RESERVE_USDT_CRYPTO", 3)}
    assert minor_balance(service, "USDT", "crypto") == (10_000_500_000, 0)


def test_top_up_twice_applies_once(service: ReserveService) -> None:
    first = service.top_up_reserve("USDT", "100", "crypto", "bank-1")
    service.top_up_reserve("USDT", "50", "crypto", "bank-2")
    again = service.top_up_reserve("USDT", "100", "crypto", "bank-1")
    # as every repeat: nothing journalled (no transaction id), the balance as it stands now
    assert again == {"success": True, "topped_up_amount": Decimal("100"),
                     "new_total_balance": Decimal("150"), "transaction_id": None}
    assert first["transaction_id"] is not None
    assert minor_balance(service, "USDT", "crypto") == (150_000_000, 0)
    assert [e.reference for e in money_events(service)] == ["bank-1", "bank-2"]


def test_top_up_reference_with_another_amount_conflicts(service: ReserveService) -> None:
    service.top_up_reserve("USDT", "100", "crypto", "bank-1")
    with pytest.raises(ReferenceConflict) as info:
        service.top_up_reserve("USDT", "101", "crypto", "bank-1")
    assert info.value.message == (
        "source_reference bank-1 was already used with a different amount or operation")
    assert info.value.status_code == 409
    assert minor_balance(service, "USDT", "crypto") == (100_000_000, 0)


def test_top_up_reference_reused_for_a_withdrawal_conflicts(service: ReserveService) -> None:
    service.top_up_reserve("USDT", "100", "crypto", "ref-1")
    with pytest.raises(ReferenceConflict) as info:
        service.withdraw_from_reserve("USDT", "100", "crypto", "ref-1")
    assert info.value.message == (
        "destination_reference ref-1 was already used with a different amount or operation")
    service.withdraw_from_reserve("USDT", "40", "crypto", "ref-2")
    with pytest.raises(ReferenceConflict) as info:
        service.top_up_reserve("USDT", "40", "crypto", "ref-2")
    assert info.value.message == (
        "source_reference ref-2 was already used with a different amount or operation")
    assert minor_balance(service, "USDT", "crypto") == (60_000_000, 0)
    assert [e.op for e in money_events(service)] == ["reserve_topup", "reserve_withdrawal"]


def test_withdraw(service: ReserveService) -> None:
    service.top_up_reserve("UGX", "10000", "fiat", "seed")
    result = service.withdraw_from_reserve("UGX", "2500", "fiat", "out-1")
    assert result == {"success": True, "withdrawn_amount": Decimal("2500"),
                      "new_total_balance": Decimal("7500"),
                      "transaction_id": nth_id(service, "RESERVE_UGX_FIAT", 3)}
    again = service.withdraw_from_reserve("UGX", "2500", "fiat", "out-1")
    assert again == {**result, "transaction_id": None}  # a repeat: nothing journalled
    assert minor_balance(service, "UGX", "fiat") == (7500, 0)
    with pytest.raises(ReferenceConflict, match="^destination_reference out-1 was already used"):
        service.withdraw_from_reserve("UGX", "2501", "fiat", "out-1")
    withdrawal = money_events(service)[-1]
    assert (withdrawal.op, withdrawal.amount_minor, withdrawal.d_total_minor,
            withdrawal.d_locked_minor, withdrawal.total_minor) == (
        "reserve_withdrawal", 2500, -2500, 0, 7500)


def test_withdraw_only_from_available(service: ReserveService) -> None:
    service.top_up_reserve("UGX", "1000", "fiat", "seed")
    service.reserve_amount("UGX", "600", "fiat", "h1", "swap")
    with pytest.raises(InsufficientReserve) as info:
        service.withdraw_from_reserve("UGX", "500", "fiat", "out-1")
    assert info.value.message == "Insufficient reserve balance. Required: 500.0, Available: 400.0"
    assert info.value.details["reserve_status"] == {
        "is_sufficient": False, "required_amount": Decimal("500"),
        "available_amount": Decimal("400"), "utilization_percentage": Decimal("60.00"),
        "status": "moderate",
    }
    assert minor_balance(service, "UGX", "fiat") == (1000, 600)
    # the refused reference was not recorded: it can be used for the amount that fits
    result = service.withdraw_from_reserve("UGX", "400", "fiat", "out-1")
    assert result["new_total_balance"] == Decimal("600")
    assert minor_balance(service, "UGX", "fiat") == (600, 600)
    with pytest.raises(InsufficientReserve, match="^Insufficient reserve balance. Required: "
                                                  r"1.0, Available: 0.0$"):
        service.withdraw_from_reserve("UGX", "1", "fiat", "out-2")


def test_withdraw_from_an_empty_reserve(service: ReserveService) -> None:
    with pytest.raises(InsufficientReserve) as info:
        service.withdraw_from_reserve("KES", "0.01", "fiat", "out")
    assert info.value.message == "Insufficient reserve balance. Required: 0.01, Available: 0.0"
    assert minor_balance(service, "KES", "fiat") == (0, 0)
    assert money_events(service) == []
