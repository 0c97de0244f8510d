"""Two-phase holds: reserve, release, commit (full and partial), their errors and repeats.

Every call goes through CheckedService, which checks total >= locked >= 0 on every account
after every call, refused or not."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.engine import ReserveEngine
from engine.errors import (
    ExceedsHold,
    HoldAlreadyEnded,
    HoldNotFound,
    InsufficientReserve,
    ReferenceConflict,
)
from engine.service import ReserveService
from engine.types import HoldState
from tests.engine_helpers import (
    Clock,
    START_MS,
    make_service,
    minor_balance,
    money_events,
    nth_id,
)

RUN_ON_CLUSTER = True  # the backend fixture adds a local 3-master Redis Cluster


@pytest.fixture
def service(backend: dict[str, Any]) -> ReserveService:
    svc = make_service(backend)
    svc.top_up_reserve("USDT", "10000", "crypto", "seed")
    return svc


def usdt(service: ReserveService) -> tuple[int, int]:
    return minor_balance(service, "USDT", "crypto")


def test_reserve_locks_the_amount(service: ReserveService) -> None:
    result = service.reserve_amount("USDT", "1000", "crypto", "h1", "swap")
    assert result == {
        "success": True, "reference_id": "h1", "reserved_amount": Decimal("1000"),
        "available_balance": Decimal("9000"), "locked_balance": Decimal("1000"),
        "status": "healthy", "hold_state": "pending",
        "transaction_id": nth_id(service, "RESERVE_USDT_CRYPTO", 3),
        "committed_amount": Decimal("0"), "released_amount": Decimal("0"),
    }  # the account's shard's events 1 and 2: account_open and the seed top-up
    assert usdt(service) == (10_000_000_000, 1_000_000_000)
    assert service.get_hold("h1") == {
        "reference_id": "h1", "account": "RESERVE_USDT_CRYPTO", "currency": "USDT",
        "account_type": "crypto", "state": "pending", "amount": Decimal("1000"),
        "committed_amount": Decimal("0"), "released_amount": Decimal("0"),
        "operation_type": "swap", "created_at_ms": START_MS, "expires_at_ms": None,
        "ended_at_ms": None,
    }


def test_insufficient_reserve_has_the_seeds_message(backend: dict[str, Any]) -> None:
    service = make_service(backend)
    service.top_up_reserve("USDT", "500", "crypto", "seed")
    with pytest.raises(InsufficientReserve) as info:
        service.reserve_amount("USDT", "1000", "crypto", "h1", "swap")
    error = info.value
    assert error.message == "Insufficient reserve balance. Required: 1000.0, Available: 500.0"
    assert error.status_code == 409
    assert error.to_dict() == {
        "success": False,
        "error": "Insufficient reserve balance. Required: 1000.0, Available: 500.0",
        "code": "exceeds_available",
        "reserve_status": {
            "is_sufficient": False, "required_amount": Decimal("1000"),
            "available_amount": Decimal("500"), "utilization_percentage": Decimal("0.00"),
            "status": "healthy",
        },
    }
    assert usdt(service) == (500_000_000, 0)
    assert [e.op for e in money_events(service)] == ["reserve_topup"]  # nothing journalled
    with pytest.raises(HoldNotFound, match="^Hold h1 not found$"):
        service.get_hold("h1")


def test_insufficient_counts_what_is_locked(service: ReserveService) -> None:
    service.withdraw_from_reserve("USDT", "9000", "crypto", "out")
    service.reserve_amount("USDT", "500", "crypto", "h1", "swap")
    with pytest.raises(InsufficientReserve) as info:
        service.reserve_amount("USDT", "1000", "crypto", "h2", "swap")
    assert info.value.message == "Insufficient reserve balance. Required: 1000.0, Available: 500.0"
    assert info.value.details["reserve_status"] == {
        "is_sufficient": False, "required_amount": Decimal("1000"),
        "available_amount": Decimal("500"), "utilization_percentage": Decimal("50.00"),
        "status": "moderate",
    }
    # the whole available balance can still be taken, to the last minor unit
    service.reserve_amount("USDT", "500", "crypto", "h2", "swap")
    assert usdt(service) == (1_000_000_000, 1_000_000_000)
    with pytest.raises(InsufficientReserve, match=r"Required: 0.000001, Available: 0.0$"):
        service.reserve_amount("USDT", "0.000001", "crypto", "h3", "swap")


def test_a_refused_reference_can_be_used_later(service: ReserveService) -> None:
    with pytest.raises(InsufficientReserve):
        service.reserve_amount("USDT", "20000", "crypto", "h1", "swap")
    result = service.reserve_amount("USDT", "100", "crypto", "h1", "swap")
    assert result["hold_state"] == "pending"
    assert usdt(service) == (10_000_000_000, 100_000_000)


def test_same_reference_returns_the_existing_hold(service: ReserveService) -> None:
    first = service.reserve_amount("USDT", "1000", "crypto", "h1", "swap")
    events_before = len(money_events(service))
    again = service.reserve_amount("USDT", "1000.000000", "crypto", "h1", "swap")
    assert again == {**first, "transaction_id": None}  # nothing journalled the second time
    assert usdt(service) == (10_000_000_000, 1_000_000_000)
    assert len(money_events(service)) == events_before


def test_same_reference_with_another_amount_conflicts(service: ReserveService) -> None:
    service.reserve_amount("USDT", "1000", "crypto", "h1", "swap")
    with pytest.raises(ReferenceConflict) as info:
        service.reserve_amount("USDT", "1001", "crypto", "h1", "swap")
    assert info.value.message == "Reference h1 is already used with a different amount or account"
    assert info.value.status_code == 409
    assert info.value.details == {"code": "reference_conflict"}
    assert usdt(service) == (10_000_000_000, 1_000_000_000)


def test_a_refused_reference_stays_free_for_another_account(
        backend: dict[str, Any], service: ReserveService, request: pytest.FixtureRequest) -> None:
    if backend["name"] == "cluster":
        # Known difference: where the reference's index sits in another slot than the account,
        # the reserve claims it before its script runs and keeps the claim when the script
        # refuses (dropping it could orphan a hold made meanwhile by a racing call). Strict:
        # this fails once the engine is fixed.
        request.applymarker(pytest.mark.xfail(strict=True, raises=ReferenceConflict, reason=(
            "a refused cross-slot reserve leaves its reference claimed")))
    service.top_up_reserve("UGX", "5000", "fiat", "seed")
    with pytest.raises(InsufficientReserve):
        service.reserve_amount("USDT", "10001", "crypto", "h1", "swap")
    service.reserve_amount("UGX", "1000", "fiat", "h1", "swap")
    assert service.get_hold("h1")["account"] == "RESERVE_UGX_FIAT"
    assert minor_balance(service, "UGX", "fiat") == (5000, 1000)


def test_same_reference_on_another_account_conflicts(service: ReserveService) -> None:
    service.top_up_reserve("UGX", "5000", "fiat", "seed")
    service.reserve_amount("USDT", "1000", "crypto", "h1", "swap")
    events_before = len(money_events(service))
    with pytest.raises(ReferenceConflict) as info:
        service.reserve_amount("UGX", "1000", "fiat", "h1", "swap")
    assert info.value.message == "Reference h1 is already used with a different amount or account"
    assert minor_balance(service, "UGX", "fiat") == (5000, 0)
    assert len(money_events(service)) == events_before
    # the conflict did not take the reference over
    assert service.get_hold("h1")["account"] == "RESERVE_USDT_CRYPTO"


def test_release_frees_the_hold(service: ReserveService) -> None:
    service.reserve_amount("USDT", "1000", "crypto", "h1", "swap")
    result = service.release_reserve("h1")
    assert result == {
        "success": True, "reference_id": "h1", "reserved_amount": Decimal("1000"),
        "available_balance": Decimal("10000"), "locked_balance": Decimal("0"),
        "status": "healthy", "hold_state": "released",
        "transaction_id": nth_id(service, "RESERVE_USDT_CRYPTO", 4),
        "committed_amount": Decimal("0"), "released_amount": Decimal("1000"),
    }
    assert usdt(service) == (10_000_000_000, 0)
    again = service.release_reserve("h1")
    assert again == {**result, "transaction_id": None}
    assert usdt(service) == (10_000_000_000, 0)
    hold = service.get_hold("h1")
    assert (hold["state"], hold["released_amount"], hold["ended_at_ms"]) == (
        "released", Decimal("1000"), START_MS)


def test_reserve_after_release_with_the_same_reference_locks_nothing(
        service: ReserveService) -> None:
    service.reserve_amount("USDT", "1000", "crypto", "h1", "swap")
    service.release_reserve("h1")
    again = service.reserve_amount("USDT", "1000", "crypto", "h1", "swap")
    assert (again["hold_state"], again["transaction_id"]) == ("released", None)
    assert usdt(service) == (10_000_000_000, 0)


def test_full_commit(service: ReserveService) -> None:
    service.reserve_amount("USDT", "1000", "crypto", "h1", "swap")
    result = service.commit_reserve("h1")
    assert result == {
        "success": True, "reference_id": "h1", "reserved_amount": Decimal("1000"),
        "available_balance": Decimal("9000"), "locked_balance": Decimal("0"),
        "status": "healthy", "hold_state": "committed",
        "transaction_id": nth_id(service, "RESERVE_USDT_CRYPTO", 4),
        "committed_amount": Decimal("1000"), "released_amount": Decimal("0"),
    }
    assert usdt(service) == (9_000_000_000, 0)
    assert service.commit_reserve("h1") == {**result, "transaction_id": None}
    assert service.commit_reserve("h1", "1000") == {**result, "transaction_id": None}
    assert usdt(service) == (9_000_000_000, 0)
    hold = service.get_hold("h1")
    assert (hold["state"], hold["committed_amount"], hold["released_amount"]) == (
        "committed", Decimal("1000"), Decimal("0"))


def test_partial_commit_frees_the_rest(service: ReserveService) -> None:
    service.reserve_amount("USDT", "1000", "crypto", "h1", "swap")
    service.reserve_amount("USDT", "2000", "crypto", "h2", "swap")
    result = service.commit_reserve("h1", "300.5")
    assert (result["hold_state"], result["locked_balance"], result["available_balance"]) == (
        "committed", Decimal("2000"), Decimal("7699.5"))
    assert usdt(service) == (9_699_500_000, 2_000_000_000)
    hold = service.get_hold("h1")
    assert (hold["committed_amount"], hold["released_amount"]) == (
        Decimal("300.5"), Decimal("699.5"))
    commit = money_events(service)[-1]
    assert (commit.op, commit.amount_minor, commit.d_total_minor, commit.d_locked_minor,
            commit.extra["held"]) == ("reserve_commit", 300_500_000, -300_500_000,
                                      -1_000_000_000, "1000000000")
    # repeating the same partial commit is idempotent; another amount is refused
    assert service.commit_reserve("h1", "300.5")["transaction_id"] is None
    with pytest.raises(HoldAlreadyEnded) as info:
        service.commit_reserve("h1", "400")
    assert info.value.message == "Hold h1 was already committed"
    assert info.value.details == {"code": "hold_already_committed", "state": "committed"}
    # a commit without an amount asks "is it committed?": the earlier answer, nothing moves
    assert service.commit_reserve("h1")["transaction_id"] is None
    assert service.get_hold("h1")["committed_amount"] == Decimal("300.5")
    assert usdt(service) == (9_699_500_000, 2_000_000_000)


def test_commit_more_than_held_changes_nothing(service: ReserveService) -> None:
    service.reserve_amount("USDT", "1000", "crypto", "h1", "swap")
    with pytest.raises(ExceedsHold) as info:
        service.commit_reserve("h1", "1000.000001")
    assert info.value.message == "Cannot commit more than the held amount of hold h1"
    assert info.value.status_code == 409
    assert usdt(service) == (10_000_000_000, 1_000_000_000)
    assert service.get_hold("h1")["state"] == "pending"
    assert service.commit_reserve("h1", "1000")["hold_state"] == "committed"


@pytest.mark.parametrize("call", ["commit", "commit_amount", "release", "get"])
def test_unknown_hold(service: ReserveService, call: str) -> None:
    with pytest.raises(HoldNotFound) as info:
        if call == "commit":
            service.commit_reserve("nope")
        elif call == "commit_amount":
            service.commit_reserve("nope", "10")
        elif call == "release":
            service.release_reserve("nope")
        else:
            service.get_hold("nope")
    assert info.value.message == "Hold nope not found"
    assert info.value.status_code == 404
    assert usdt(service) == (10_000_000_000, 0)


def test_release_after_commit_is_refused(service: ReserveService) -> None:
    service.reserve_amount("USDT", "1000", "crypto", "h1", "swap")
    service.commit_reserve("h1", "600")
    with pytest.raises(HoldAlreadyEnded) as info:
        service.release_reserve("h1")
    assert info.value.message == "Hold h1 was already committed"
    assert info.value.details["state"] == "committed"
    assert usdt(service) == (9_400_000_000, 0)


def test_commit_after_release_is_refused(service: ReserveService) -> None:
    service.reserve_amount("USDT", "1000", "crypto", "h1", "swap")
    service.release_reserve("h1")
    for amount in (None, "1000", "1"):
        with pytest.raises(HoldAlreadyEnded) as info:
            service.commit_reserve("h1", amount)
        assert info.value.message == "Hold h1 was already released"
        assert info.value.details == {"code": "hold_already_released", "state": "released"}
    assert usdt(service) == (10_000_000_000, 0)
    assert [e.op for e in money_events(service)] == [
        "reserve_topup", "reserve_lock", "reserve_release"]


async def test_async_engine_hold_cycle(backend: dict[str, Any], async_redis: Any) -> None:
    clock = Clock()
    engine = ReserveEngine(async_redis, backend["settings"], clock_ms=clock)
    top = await engine.top_up_reserve("UGX", "1000", "fiat", "seed")
    assert (top.applied, top.balance.total_minor, top.amount_minor) == (True, 1000, 1000)
    hold = await engine.reserve_amount("UGX", "400", "fiat", "h1", "swap", ttl_s=60)
    assert hold.applied is True
    assert hold.hold.state is HoldState.pending
    assert hold.hold.expires_ms == clock.now_ms + 60_000
    assert (hold.balance.total_minor, hold.balance.locked_minor) == (1000, 400)
    repeat = await engine.reserve_amount("UGX", 400, "fiat", "h1", "swap")
    assert (repeat.applied, repeat.event_id, repeat.balance.locked_minor) == (False, 0, 400)
    done = await engine.commit_reserve("h1", "150")
    assert (done.hold.state, done.hold.committed_minor, done.hold.released_minor) == (
        HoldState.committed, 150, 250)
    assert (done.balance.total_minor, done.balance.locked_minor) == (850, 0)
    with pytest.raises(HoldAlreadyEnded, match="^Hold h1 was already committed$"):
        await engine.release_reserve("h1")
    balance = await engine.get_reserve_balance("UGX", "fiat")
    assert (balance.total_minor, balance.locked_minor, balance.available_minor) == (850, 0, 850)
