"""Helpers shared by the engine tests: a controllable clock, the journal, the invariant."""

from __future__ import annotations

from typing import Any, TypeVar

from engine.commands import Op
from engine.journal import MONEY_OPERATIONS, JournalEvent
from engine.service import ReserveService

START_MS = 1_800_000_000_000


class Clock:
    """The engine's clock, moved by hand: TTL tests never sleep."""

    def __init__(self, now_ms: int = START_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance_s(self, seconds: int) -> None:
        self.now_ms += seconds * 1000


T = TypeVar("T")


class CheckedService(ReserveService):
    """ReserveService that checks total >= locked >= 0 on every account after every call,
    whether the call succeeded or was refused."""

    def run(self, op: Op[T]) -> T:
        try:
            return super().run(op)
        finally:
            check_all_accounts(self)


def check_all_accounts(service: ReserveService) -> None:
    keys = service.ops.keys
    for shard in range(keys.shard_count):
        for label in service.client.smembers(keys.accounts_set(shard)):
            total, locked = service.client.hmget(keys.account(label).acct, "total", "locked")
            assert int(total) >= int(locked), (label, total, locked)
            assert int(locked) >= 0, (label, locked)


def make_service(backend: dict[str, Any], clock: Clock | None = None) -> ReserveService:
    return CheckedService(backend["sync"], backend["settings"], clock_ms=clock or Clock())


def journal(service: ReserveService) -> list[JournalEvent]:
    """Every event of every shard's stream, in stream order per shard."""
    events: list[JournalEvent] = []
    for stream in service.ops.keys.streams():
        for stream_id, fields in service.client.xrange(stream):
            events.append(JournalEvent.parse(stream_id, fields))
    return events


def money_events(service: ReserveService) -> list[JournalEvent]:
    return [e for e in journal(service) if e.op in MONEY_OPERATIONS]


def minor_balance(service: ReserveService, currency: str, account_type: str) -> tuple[int, int]:
    """(total_minor, locked_minor) read straight from the account hash."""
    spec = service.ops.reserve_spec(currency, account_type)
    total, locked = service.client.hmget(service.ops.keys.account(spec.label).acct,
                                         "total", "locked")
    return int(total), int(locked)


def assert_invariant(service: ReserveService, currency: str, account_type: str) -> None:
    total, locked = minor_balance(service, currency, account_type)
    assert total >= locked
    assert locked >= 0


def assert_journal_matches(service: ReserveService) -> None:
    """Per account the signed changes add up to the balances; ids strictly increase."""
    events = money_events(service)
    ids = [e.event_id for e in journal(service)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    sums: dict[str, list[int]] = {}
    for e in events:
        acc = sums.setdefault(e.account, [0, 0])
        acc[0] += e.d_total_minor
        acc[1] += e.d_locked_minor
        assert (acc[0], acc[1]) == (e.total_minor, e.locked_minor), e
    for label, (total, locked) in sums.items():
        spec = service.ops.spec_of_label(label)
        assert minor_balance(service, spec.currency.code, spec.currency.account_type.value) == (
            total, locked)
