"""Regression tests for state-machine bugs other ledgers shipped, on fakeredis and real Redis."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from engine.engine import ReserveEngine
from engine.errors import ExceedsHold, HoldAlreadyEnded, HoldNotFound, InsufficientReserve, InvalidRequest
from engine.service import ReserveService

RUN_ON_CLUSTER = True  # the backend fixture adds a local 3-master Redis Cluster


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def service(backend: dict[str, Any]) -> ReserveService:
    svc = ReserveService(backend["sync"], backend["settings"], clock_ms=Clock())
    svc.top_up_reserve("USDT", Decimal("5000"), "crypto", "seed")
    return svc


def _balance(service: ReserveService) -> tuple[Decimal, Decimal]:
    b = service.get_reserve_balance("USDT", "crypto")
    return b["total_balance"], b["locked_balance"]


def test_a_refused_hold_can_never_be_committed(service: ReserveService) -> None:
    with pytest.raises(InsufficientReserve):
        service.reserve_amount("USDT", Decimal("6000"), "crypto", "big", "swap")
    with pytest.raises(HoldNotFound, match="Hold big not found"):
        service.commit_reserve("big")
    assert _balance(service) == (Decimal("5000"), Decimal("0"))


def test_a_double_release_frees_once(service: ReserveService) -> None:
    service.reserve_amount("USDT", Decimal("1000"), "crypto", "h", "swap")
    service.reserve_amount("USDT", Decimal("1000"), "crypto", "other", "swap")
    first = service.release_reserve("h")
    second = service.release_reserve("h")
    assert (first["hold_state"], second["hold_state"]) == ("released", "released")
    assert second["transaction_id"] is None  # nothing journalled the second time
    assert _balance(service) == (Decimal("5000"), Decimal("1000"))


async def test_two_racing_partial_commits_settle_once(backend: dict[str, Any],
                                                      async_redis: Any) -> None:
    engine = ReserveEngine(async_redis, backend["settings"])
    await engine.top_up_reserve("USDT", "5000", "crypto", "seed")
    await engine.reserve_amount("USDT", "1000", "crypto", "h", "swap")
    results = await asyncio.gather(engine.commit_reserve("h", "300"),
                                   engine.commit_reserve("h", "400"), return_exceptions=True)
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1
    assert isinstance(lost[0], HoldAlreadyEnded)
    committed = won[0].hold.committed_minor
    balance = await engine.get_reserve_balance("USDT", "crypto")
    assert balance.total_minor == 5_000_000_000 - committed
    assert balance.locked_minor == 0


def test_committing_more_than_held_is_refused(service: ReserveService) -> None:
    service.reserve_amount("USDT", Decimal("1000"), "crypto", "h", "swap")
    with pytest.raises(ExceedsHold, match="Cannot commit more than the held amount of hold h"):
        service.commit_reserve("h", Decimal("1000.000001"))
    assert _balance(service) == (Decimal("5000"), Decimal("1000"))
    assert service.get_hold("h")["state"] == "pending"


def test_commit_of_zero_is_refused_and_release_still_works(service: ReserveService) -> None:
    service.reserve_amount("USDT", Decimal("1000"), "crypto", "h", "swap")
    with pytest.raises(InvalidRequest, match="greater than zero"):
        service.commit_reserve("h", Decimal("0"))
    assert service.release_reserve("h")["hold_state"] == "released"
    assert _balance(service) == (Decimal("5000"), Decimal("0"))


def test_an_expired_hold_is_not_visible_as_pending(service: ReserveService) -> None:
    clock = service.ops.clock_ms
    service.reserve_amount("USDT", Decimal("1000"), "crypto", "h", "swap", ttl_s=5)
    assert service.get_hold("h")["state"] == "pending"
    clock.now_ms += 5_000  # type: ignore[attr-defined]
    assert service.get_hold("h")["state"] == "expired"
    with pytest.raises(HoldAlreadyEnded, match="Hold h has expired"):
        service.commit_reserve("h")
    assert _balance(service) == (Decimal("5000"), Decimal("0"))


async def test_six_holds_of_1000_against_5000_accept_five(backend: dict[str, Any],
                                                          async_redis: Any) -> None:
    engine = ReserveEngine(async_redis, backend["settings"])
    await engine.top_up_reserve("USDT", "5000", "crypto", "seed")
    results = await asyncio.gather(
        *[engine.reserve_amount("USDT", "1000", "crypto", f"h{i}", "swap") for i in range(6)],
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 5
    assert sum(isinstance(r, InsufficientReserve) for r in results) == 1
    balance = await engine.get_reserve_balance("USDT", "crypto")
    assert (balance.total_minor, balance.locked_minor) == (5_000_000_000, 5_000_000_000)
