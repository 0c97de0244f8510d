"""reserve_many: several legs locked all-or-nothing in one script."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from engine.engine import ReserveEngine
from engine.errors import InsufficientReserve, InvalidRequest, ReferenceConflict
from engine.service import ReserveService
from engine.types import HoldResult, HoldState
from tests.engine_helpers import (
    CheckedService,
    Clock,
    Ids,
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
    svc.top_up_reserve("UGX", "5000", "fiat", "seed")
    return svc


def many(service: ReserveService, legs: list[tuple[str, str, int, str]],
         ttl_s: int | None = None) -> list[HoldResult]:
    specs = [(service.ops.reserve_spec(cur, kind), amount, ref) for cur, kind, amount, ref in legs]
    return service.run(service.ops.reserve_many(specs, "swap", ttl_s))


def balances(service: ReserveService) -> tuple[tuple[int, int], tuple[int, int]]:
    return minor_balance(service, "USDT", "crypto"), minor_balance(service, "UGX", "fiat")


def test_every_leg_is_locked(service: ReserveService) -> None:
    results = many(service, [("USDT", "crypto", 100_000_000, "s1-a"),
                             ("UGX", "fiat", 500, "s1-b")])
    assert [(r.applied, r.hold.state, r.hold.amount_minor, r.balance.locked_minor)
            for r in results] == [(True, HoldState.pending, 100_000_000, 100_000_000),
                                  (True, HoldState.pending, 500, 500)]
    # each leg's event in its account's shard, after the fixture's opens and top-ups (5, 6 on
    # one shard: the legs in order)
    ids = Ids(service)
    usdt, ugx = "RESERVE_USDT_CRYPTO", "RESERVE_UGX_FIAT"
    expected = [ids.next(label) for label in (usdt, usdt, ugx, ugx, usdt, ugx)][-2:]
    assert [r.event_id for r in results] == expected
    assert balances(service) == ((1_000_000_000, 100_000_000), (5000, 500))
    assert service.get_hold("s1-b")["account"] == "RESERVE_UGX_FIAT"
    # each leg ends on its own
    service.commit_reserve("s1-a")
    service.release_reserve("s1-b")
    assert balances(service) == ((900_000_000, 0), (5000, 0))
    assert_journal_matches(service)


def test_one_leg_short_locks_nothing(service: ReserveService) -> None:
    events_before = money_events(service)
    with pytest.raises(InsufficientReserve) as info:
        many(service, [("USDT", "crypto", 100_000_000, "s1-a"), ("UGX", "fiat", 5001, "s1-b")])
    assert info.value.message == "Insufficient reserve balance. Required: 5001.0, Available: 5000.0"
    assert info.value.details["reserve_status"]["is_sufficient"] is False
    assert balances(service) == ((1_000_000_000, 0), (5000, 0))
    assert money_events(service) == events_before
    for ref in ("s1-a", "s1-b"):
        with pytest.raises(Exception, match=f"^Hold {ref} not found$"):
            service.get_hold(ref)
    # the refused references stay free
    assert len(many(service, [("USDT", "crypto", 1, "s1-a"), ("UGX", "fiat", 1, "s1-b")])) == 2


def test_repeat_is_idempotent(service: ReserveService) -> None:
    legs = [("USDT", "crypto", 100_000_000, "s1-a"), ("UGX", "fiat", 500, "s1-b")]
    first = many(service, legs)
    events_before = money_events(service)
    again = many(service, legs)
    assert [(r.applied, r.event_id, r.hold.state, r.hold.amount_minor) for r in again] == [
        (False, 0, HoldState.pending, 100_000_000), (False, 0, HoldState.pending, 500)]
    assert [r.hold for r in again] == [r.hold for r in first]
    assert balances(service) == ((1_000_000_000, 100_000_000), (5000, 500))
    assert money_events(service) == events_before


def test_repeat_with_another_amount_conflicts(service: ReserveService) -> None:
    many(service, [("USDT", "crypto", 100_000_000, "s1-a"), ("UGX", "fiat", 500, "s1-b")])
    with pytest.raises(ReferenceConflict) as info:
        many(service, [("USDT", "crypto", 100_000_000, "s1-a"), ("UGX", "fiat", 501, "s1-b")])
    assert info.value.message == "Reference s1-b is already used with a different amount or account"
    assert balances(service) == ((1_000_000_000, 100_000_000), (5000, 500))


def test_only_some_legs_held_conflicts(service: ReserveService) -> None:
    service.reserve_amount("USDT", "100", "crypto", "s1-a", "swap")
    events_before = money_events(service)
    with pytest.raises(ReferenceConflict) as info:
        many(service, [("USDT", "crypto", 100_000_000, "s1-a"), ("UGX", "fiat", 500, "s1-b")])
    assert info.value.message == "Reference s1-a is already used with a different amount or account"
    assert balances(service) == ((1_000_000_000, 100_000_000), (5000, 0))
    assert money_events(service) == events_before


def test_leg_reference_held_on_another_account_conflicts(service: ReserveService) -> None:
    service.reserve_amount("UGX", "10", "fiat", "taken", "swap")
    with pytest.raises(ReferenceConflict) as info:
        many(service, [("USDT", "crypto", 1, "fresh"), ("USDT", "crypto", 1, "taken")])
    assert info.value.message == (
        "Reference taken is already used with a different amount or account")
    assert balances(service) == ((1_000_000_000, 0), (5000, 10))


def test_legs_on_one_account_add_up(service: ReserveService) -> None:
    with pytest.raises(InsufficientReserve) as info:
        many(service, [("USDT", "crypto", 600_000_000, "a"), ("USDT", "crypto", 500_000_000, "b")])
    # the legs on this account want 1100 together
    assert info.value.message == "Insufficient reserve balance. Required: 1100.0, Available: 1000.0"
    assert balances(service) == ((1_000_000_000, 0), (5000, 0))
    results = many(service, [("USDT", "crypto", 600_000_000, "a"),
                             ("USDT", "crypto", 400_000_000, "b")])
    assert [r.balance.locked_minor for r in results] == [600_000_000, 1_000_000_000]
    assert balances(service) == ((1_000_000_000, 1_000_000_000), (5000, 0))
    assert_journal_matches(service)


def test_legs_with_a_ttl_expire_together(service: ReserveService, clock: Clock) -> None:
    results = many(service, [("USDT", "crypto", 1, "a"), ("UGX", "fiat", 1, "b")], ttl_s=30)
    assert {r.hold.expires_ms for r in results} == {clock.now_ms + 30_000}
    clock.advance_s(30)
    assert service.sweep().expired_count == 2
    assert balances(service) == ((1_000_000_000, 0), (5000, 0))


def test_holds_past_their_ttl_free_their_amount_first(service: ReserveService,
                                                     clock: Clock) -> None:
    service.reserve_amount("USDT", "900", "crypto", "old", "swap", 30)
    service.reserve_amount("UGX", "4000", "fiat", "old-ugx", "swap", 30)
    clock.advance_s(30)  # not swept: the call itself ends them before it checks
    results = many(service, [("USDT", "crypto", 600_000_000, "a"), ("UGX", "fiat", 4500, "b")])
    assert [r.balance.locked_minor for r in results] == [600_000_000, 4500]
    assert service.get_hold("old")["state"] == "expired"
    assert service.get_hold("old-ugx")["state"] == "expired"
    assert_journal_matches(service)


def test_references_are_free_again_after_the_retention(backend: dict[str, Any],
                                                       clock: Clock) -> None:
    settings = replace(backend["settings"], retention_s=60)
    service = CheckedService(backend["sync"], settings, clock_ms=clock)
    service.top_up_reserve("USDT", "1000", "crypto", "seed")
    service.top_up_reserve("UGX", "5000", "fiat", "seed")
    legs = [("USDT", "crypto", 100_000_000, "s1-a"), ("UGX", "fiat", 500, "s1-b")]
    for result in many(service, legs):
        service.release_reserve(result.hold.reference_id)
    clock.advance_s(59)
    assert [r.hold.state for r in many(service, legs)] == [HoldState.released] * 2  # a repeat
    clock.advance_s(1)  # the released holds are forgotten: the same references lock anew
    assert [(r.applied, r.hold.state) for r in many(service, legs)] == [
        (True, HoldState.pending)] * 2
    assert balances(service) == ((1_000_000_000, 100_000_000), (5000, 500))
    assert_journal_matches(service)


@pytest.mark.parametrize(("legs", "message"), [
    ([], "reserve_many takes 1 to 4 legs"),
    ([("UGX", "fiat", 1, f"r{i}") for i in range(5)], "reserve_many takes 1 to 4 legs"),
    ([("UGX", "fiat", 1, "same"), ("USDT", "crypto", 1, "same")],
     "each leg needs its own reference_id"),
    ([("UGX", "fiat", 0, "a")], "amount must be greater than zero"),
    ([("UGX", "fiat", 2**53, "a")], "amount exceeds the largest supported amount"),
    ([("UGX", "fiat", "5", "a")], "amount must be an integer number of minor units"),
    ([("UGX", "fiat", 1, "bad ref")],
     "reference_id must be 1-128 characters of letters, digits and _ . : @ / + = -, with no "
     "part between slashes that is . or .."),
])
def test_bad_legs(service: ReserveService, legs: list[Any], message: str) -> None:
    events_before = money_events(service)
    with pytest.raises(InvalidRequest) as info:
        many(service, legs)
    assert info.value.message == message
    assert balances(service) == ((1_000_000_000, 0), (5000, 0))
    assert money_events(service) == events_before


async def test_async_engine_reserve_many(backend: dict[str, Any], async_redis: Any) -> None:
    engine = ReserveEngine(async_redis, backend["settings"], clock_ms=Clock())
    await engine.top_up_reserve("ETH", "2", "crypto", "seed")
    await engine.top_up_reserve("EUR", "100", "fiat", "seed")
    eth = engine.ops.reserve_spec("ETH", "crypto")
    eur = engine.ops.reserve_spec("EUR", "fiat")
    results = await engine.reserve_many([(eth, 150_000_000, "x-a"), (eur, 9_999, "x-b")], "swap")
    assert [r.balance.available_minor for r in results] == [50_000_000, 1]
    with pytest.raises(InsufficientReserve, match=r"Required: 0.51, Available: 0.5$"):
        await engine.reserve_many([(eur, 1, "y-a"), (eth, 51_000_000, "y-b")], "swap")
    assert (await engine.get_reserve_balance("EUR", "fiat")).locked_minor == 9_999
