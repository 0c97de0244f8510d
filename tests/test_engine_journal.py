"""The journal: one event per balance change, in the same atomic step, adding up to the
balances; nothing for refused or repeated operations."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from engine.errors import ReserveError
from tests.engine_helpers import (
    START_MS,
    Clock,
    assert_journal_matches,
    journal,
    make_service,
    nth_id,
)

RUN_ON_CLUSTER = True  # the backend fixture adds a local 3-master Redis Cluster


def test_one_event_per_change_and_none_for_refusals_or_repeats(backend: dict[str, Any]) -> None:
    clock = Clock()
    service = make_service(backend, clock)
    attempts = [
        lambda: service.top_up_reserve("UGX", "1000", "fiat", "seed"),
        lambda: service.top_up_reserve("UGX", "1000", "fiat", "seed"),  # repeat
        lambda: service.top_up_reserve("UGX", "999", "fiat", "seed"),  # conflict
        lambda: service.reserve_amount("UGX", "300", "fiat", "h1", "swap", 60),
        lambda: service.reserve_amount("UGX", "300", "fiat", "h1", "swap", 60),  # repeat
        lambda: service.reserve_amount("UGX", "800", "fiat", "h2", "buy"),  # insufficient
        lambda: service.reserve_amount("UGX", "0.5", "fiat", "h2", "buy"),  # precision
        lambda: service.reserve_amount("UGX", "200", "fiat", "h2", "buy"),
        lambda: service.commit_reserve("h2", "201"),  # exceeds hold
        lambda: service.commit_reserve("h2", "150"),
        lambda: service.commit_reserve("h2", "150"),  # repeat
        lambda: service.release_reserve("h2"),  # already committed
        lambda: service.release_reserve("nope"),  # not found
        lambda: service.withdraw_from_reserve("UGX", "600", "fiat", "out"),  # insufficient
        lambda: service.withdraw_from_reserve("UGX", "500", "fiat", "out"),
        lambda: service.withdraw_from_reserve("UGX", "500", "fiat", "out"),  # repeat
        lambda: service.reserve_amount("UGX", "50", "fiat", "h3", "sell"),
        lambda: service.release_reserve("h3"),
        lambda: service.release_reserve("h3"),  # repeat
        lambda: clock.advance_s(60),
        lambda: service.sweep(),
        lambda: service.sweep(),  # nothing left to expire
    ]
    for attempt in attempts:
        with suppress(ReserveError):
            attempt()
        assert_journal_matches(service)  # after every step
        clock.now_ms += 1
    events = journal(service)
    # the account's shard's ids without a gap: 1, 2, 3... on one shard
    assert [e.event_id for e in events] == [
        nth_id(service, "RESERVE_UGX_FIAT", n) for n in range(1, len(events) + 1)]
    assert [(e.op, e.reference, e.amount_minor, e.d_total_minor, e.d_locked_minor,
             e.total_minor, e.locked_minor) for e in events] == [
        ("account_open", "", 0, 0, 0, 0, 0),
        ("reserve_topup", "seed", 1000, 1000, 0, 1000, 0),
        ("reserve_lock", "h1", 300, 0, 300, 1000, 300),
        ("reserve_lock", "h2", 200, 0, 200, 1000, 500),
        ("reserve_commit", "h2", 150, -150, -200, 850, 300),
        ("reserve_withdrawal", "out", 500, -500, 0, 350, 300),
        ("reserve_lock", "h3", 50, 0, 50, 350, 350),
        ("reserve_release", "h3", 50, 0, -50, 350, 300),
        ("reserve_expire", "h1", 300, 0, -300, 350, 0),
    ]
    assert {e.account for e in events} == {"RESERVE_UGX_FIAT"}
    # the engine's clock stamps each event: step i ran at START_MS + i ms (+ 60 s after step 19)
    assert [e.ts_ms - START_MS for e in events] == [0, 0, 3, 7, 9, 14, 16, 17, 60_020]
    lock = events[2]
    assert lock.extra == {"exp": str(START_MS + 3 + 60_000), "optype": "swap"}
    assert events[3].extra == {"exp": "0", "optype": "buy"}
    assert events[4].extra == {"held": "200"}


def test_metadata_travels_with_the_event(backend: dict[str, Any]) -> None:
    service = make_service(backend)
    service.run(service.ops.top_up_reserve("USDT", "5", "crypto", "seed",
                                           {"actor": "ops@example.com", "ticket": 42}))
    service.reserve_amount("USDT", "1", "crypto", "h1", "swap",
                           metadata={"user_id": "u-7", "pair": "USDT/UGX"})
    service.run(service.ops.release("h1", {"reason": "cancelled"}))
    events = [e for e in journal(service) if e.op != "account_open"]
    assert [e.meta for e in events] == [
        {"actor": "ops@example.com", "ticket": 42},
        {"pair": "USDT/UGX", "user_id": "u-7"},
        {"reason": "cancelled"},
    ]


def test_event_ids_are_the_transaction_ids(backend: dict[str, Any]) -> None:
    service = make_service(backend)
    top = service.top_up_reserve("USD", "10", "fiat", "seed")
    hold = service.reserve_amount("USD", "1", "fiat", "h1", "swap")
    commit = service.commit_reserve("h1")
    out = service.withdraw_from_reserve("USD", "2", "fiat", "out")
    ids = {e.reference: e.event_id for e in journal(service) if e.reference}
    assert ids == {"seed": top["transaction_id"], "out": out["transaction_id"],
                   "h1": commit["transaction_id"]}
    # the account shard's events 3 and 4 (after account_open and the top-up)
    assert (hold["transaction_id"], commit["transaction_id"]) == (
        nth_id(service, "RESERVE_USD_FIAT", 3), nth_id(service, "RESERVE_USD_FIAT", 4))
