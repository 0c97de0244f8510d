"""Hold TTLs (lazy expiry inside the scripts and the sweeper) and the retention of ended
records. The engine's clock is moved by hand: nothing sleeps."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from engine.engine import ReserveEngine
from engine.errors import HoldAlreadyEnded, HoldNotFound, ReferenceConflict
from engine.service import ReserveService
from engine.types import HoldState, SweepResult
from tests.engine_helpers import (
    START_MS,
    Clock,
    CheckedService,
    assert_journal_matches,
    make_service,
    minor_balance,
    money_events,
)

RUN_ON_CLUSTER = True  # the backend fixture adds a local 3-master Redis Cluster


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(backend: dict[str, Any], clock: Clock) -> ReserveService:
    svc = make_service(backend, clock)
    svc.top_up_reserve("USDT", "1000", "crypto", "seed")
    return svc


def test_commit_after_the_ttl_is_refused_and_frees_the_lock(service: ReserveService,
                                                            clock: Clock) -> None:
    service.reserve_amount("USDT", "400", "crypto", "h1", "swap", ttl_s=60)
    clock.advance_s(60)  # expires_ms is reached: the hold is over
    with pytest.raises(HoldAlreadyEnded) as info:
        service.commit_reserve("h1")
    assert info.value.message == "Hold h1 has expired"
    assert info.value.details == {"code": "hold_expired", "state": "expired"}
    assert info.value.status_code == 409
    assert minor_balance(service, "USDT", "crypto") == (1_000_000_000, 0)
    expire = money_events(service)[-1]
    assert (expire.op, expire.reference, expire.amount_minor, expire.d_total_minor,
            expire.d_locked_minor, expire.ts_ms) == (
        "reserve_expire", "h1", 400_000_000, 0, -400_000_000, START_MS + 60_000)
    # asked again, the same answer, and nothing more is journalled
    with pytest.raises(HoldAlreadyEnded, match="^Hold h1 has expired$"):
        service.commit_reserve("h1", "100")
    assert service.release_reserve("h1")["transaction_id"] is None
    assert service.release_reserve("h1")["hold_state"] == "expired"
    hold = service.get_hold("h1")
    assert (hold["state"], hold["expires_at_ms"], hold["ended_at_ms"]) == (
        "expired", START_MS + 60_000, START_MS + 60_000)
    assert [e.op for e in money_events(service)] == [
        "reserve_topup", "reserve_lock", "reserve_expire"]
    assert_journal_matches(service)


def test_commit_one_millisecond_before_the_ttl_succeeds(service: ReserveService,
                                                        clock: Clock) -> None:
    service.reserve_amount("USDT", "400", "crypto", "h1", "swap", ttl_s=60)
    clock.now_ms += 59_999
    assert service.commit_reserve("h1", "100")["hold_state"] == "committed"
    assert minor_balance(service, "USDT", "crypto") == (900_000_000, 0)


def test_get_hold_shows_expired_before_any_script_ran(service: ReserveService,
                                                      clock: Clock) -> None:
    service.reserve_amount("USDT", "400", "crypto", "h1", "swap", ttl_s=30)
    assert service.get_hold("h1")["state"] == "pending"
    clock.advance_s(31)
    hold = service.get_hold("h1")
    assert (hold["state"], hold["ended_at_ms"]) == ("expired", None)
    # nothing has moved yet: the sweep or the next script on the account ends it
    assert minor_balance(service, "USDT", "crypto") == (1_000_000_000, 400_000_000)


def test_sweep_releases_expired_holds(service: ReserveService, clock: Clock) -> None:
    service.reserve_amount("USDT", "100", "crypto", "short", "swap", ttl_s=10)
    service.reserve_amount("USDT", "200", "crypto", "long", "swap", ttl_s=100)
    service.reserve_amount("USDT", "300", "crypto", "forever", "swap")
    assert service.sweep() == SweepResult(expired_count=0, pruned_count=0, accounts_count=1)
    clock.advance_s(10)
    assert service.sweep() == SweepResult(expired_count=1, pruned_count=0, accounts_count=1)
    assert minor_balance(service, "USDT", "crypto") == (1_000_000_000, 500_000_000)
    assert service.get_hold("short")["state"] == "expired"
    assert service.get_hold("long")["state"] == "pending"
    assert service.sweep().expired_count == 0  # ended once only
    clock.advance_s(1000)
    assert service.sweep().expired_count == 1
    assert minor_balance(service, "USDT", "crypto") == (1_000_000_000, 300_000_000)
    assert service.get_hold("forever")["state"] == "pending"
    expired = [e for e in money_events(service) if e.op == "reserve_expire"]
    assert [(e.reference, e.amount_minor, e.d_locked_minor) for e in expired] == [
        ("short", 100_000_000, -100_000_000), ("long", 200_000_000, -200_000_000)]
    assert_journal_matches(service)


def test_a_new_reserve_expires_due_holds_first(service: ReserveService, clock: Clock) -> None:
    service.reserve_amount("USDT", "1000", "crypto", "h1", "swap", ttl_s=5)
    clock.advance_s(5)
    result = service.reserve_amount("USDT", "1000", "crypto", "h2", "swap")
    assert result["locked_balance"] == Decimal("1000")
    assert [e.op for e in money_events(service)][-2:] == ["reserve_expire", "reserve_lock"]
    assert service.get_hold("h1")["state"] == "expired"


def test_a_withdrawal_expires_due_holds_first(service: ReserveService, clock: Clock) -> None:
    service.reserve_amount("USDT", "1000", "crypto", "h1", "swap", ttl_s=5)
    clock.advance_s(6)
    assert service.withdraw_from_reserve("USDT", "1000", "crypto", "out")[
        "new_total_balance"] == Decimal("0")
    assert minor_balance(service, "USDT", "crypto") == (0, 0)


def test_release_of_a_hold_past_its_ttl_records_it_as_expired(service: ReserveService,
                                                              clock: Clock) -> None:
    service.reserve_amount("USDT", "400", "crypto", "h1", "swap", ttl_s=5)
    clock.advance_s(5)
    result = service.release_reserve("h1")
    assert result["hold_state"] == "expired"
    assert result["locked_balance"] == Decimal("0")
    assert money_events(service)[-1].op == "reserve_expire"


def test_retention_forgets_ended_holds(backend: dict[str, Any], clock: Clock) -> None:
    settings = replace(backend["settings"], retention_s=60)
    service = CheckedService(backend["sync"], settings, clock_ms=clock)
    service.top_up_reserve("USDT", "1000", "crypto", "seed")
    service.reserve_amount("USDT", "400", "crypto", "h1", "swap")
    service.commit_reserve("h1")
    clock.advance_s(59)
    assert service.sweep().pruned_count == 0
    assert service.commit_reserve("h1")["transaction_id"] is None  # still remembered
    clock.advance_s(1)
    # both the hold and the top-up record have ended 60 s ago
    assert service.sweep() == SweepResult(expired_count=0, pruned_count=2, accounts_count=1)
    with pytest.raises(HoldNotFound, match="^Hold h1 not found$"):
        service.get_hold("h1")
    with pytest.raises(HoldNotFound, match="^Hold h1 not found$"):
        service.commit_reserve("h1")
    # after the retention the reference is free again
    fresh = make_service(backend, clock)
    assert fresh.reserve_amount("USDT", "50", "crypto", "h1", "swap")["hold_state"] == "pending"
    assert minor_balance(service, "USDT", "crypto") == (600_000_000, 50_000_000)


def test_retention_prunes_lazily_too(backend: dict[str, Any], clock: Clock) -> None:
    settings = replace(backend["settings"], retention_s=60)
    service = CheckedService(backend["sync"], settings, clock_ms=clock)
    service.top_up_reserve("UGX", "1000", "fiat", "seed")
    service.reserve_amount("UGX", "10", "fiat", "h1", "swap")
    service.release_reserve("h1")
    clock.advance_s(61)
    service.reserve_amount("UGX", "20", "fiat", "h2", "swap")  # prunes on the side
    with pytest.raises(HoldNotFound):
        service.get_hold("h1")
    # the top-up record was pruned as well: the same source reference applies again
    assert service.top_up_reserve("UGX", "1000", "fiat", "seed")["new_total_balance"] == \
        Decimal("2000")


async def test_async_engine_sweep(backend: dict[str, Any], async_redis: Any,
                                  clock: Clock) -> None:
    engine = ReserveEngine(async_redis, backend["settings"], clock_ms=clock)
    await engine.top_up_reserve("BTC", "1", "crypto", "seed")
    await engine.reserve_amount("BTC", "0.5", "crypto", "h1", "swap", ttl_s=1)
    clock.advance_s(1)
    assert (await engine.get_hold("h1")).state is HoldState.expired
    assert await engine.sweep() == SweepResult(1, 0, 1)
    balance = await engine.get_reserve_balance("BTC", "crypto")
    assert (balance.total_minor, balance.locked_minor) == (100_000_000, 0)
    with pytest.raises(HoldAlreadyEnded, match="^Hold h1 has expired$"):
        await engine.commit_reserve("h1")


def test_a_pruned_reference_reused_on_another_account(backend: dict[str, Any], clock: Clock,
                                                      request: pytest.FixtureRequest) -> None:
    if backend["name"] == "cluster":
        # Known difference: where the reference's index sits in another slot than the account,
        # the script that prunes the hold cannot delete its index entry, so the reference stays
        # bound to its first account. Strict: this fails once the engine is fixed.
        request.applymarker(pytest.mark.xfail(strict=True, raises=ReferenceConflict, reason=(
            "a pruned reference's cross-slot index entry is never removed")))
    settings = replace(backend["settings"], retention_s=60)
    service = CheckedService(backend["sync"], settings, clock_ms=clock)
    service.top_up_reserve("USDT", "10", "crypto", "seed")
    service.top_up_reserve("UGX", "10", "fiat", "seed")
    service.reserve_amount("USDT", "1", "crypto", "h1", "swap")
    service.release_reserve("h1")  # this service now remembers h1 -> the USDT account
    clock.advance_s(60)
    service.sweep()
    service.reserve_amount("UGX", "4", "fiat", "h1", "swap")
    result = service.commit_reserve("h1", "3")
    assert (result["hold_state"], result["locked_balance"]) == ("committed", Decimal("0"))
    assert minor_balance(service, "UGX", "fiat") == (7, 0)
    assert minor_balance(service, "USDT", "crypto") == (10_000_000, 0)
