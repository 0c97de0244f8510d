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


def nth_id(service: ReserveService, label: str, n: int) -> int:
    """The id of the n-th (from 1) account or event of label's shard. Each shard counts on its
    own and ids interleave, (n - 1) * shard_count + shard + 1 (lua/lib/common.lua), so on one
    shard they are 1, 2, 3... and on a cluster exact too, just further apart."""
    keys = service.ops.keys
    return (n - 1) * keys.shard_count + keys.shard_of(label) + 1


class Ids:
    """Expected ids, one counter per shard: next(label) is the id label's next account or
    event gets (account ids and event ids have separate counters: use one Ids for each)."""

    def __init__(self, service: ReserveService) -> None:
        self.service = service
        self.counts: dict[int, int] = {}

    def next(self, label: str) -> int:
        shard = self.service.ops.keys.shard_of(label)
        self.counts[shard] = self.counts.get(shard, 0) + 1
        return nth_id(self.service, label, self.counts[shard])


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
    """Per account the signed changes add up to the balances; each shard's stream holds its
    ids without a gap, in order (1, 2, 3... on one shard), so ids are unique across shards."""
    events = money_events(service)
    keys = service.ops.keys
    for shard, stream in enumerate(keys.streams()):
        ids = [int(fields["id"]) for _, fields in service.client.xrange(stream)]
        assert ids == [n * keys.shard_count + shard + 1 for n in range(len(ids))], (shard, ids)
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
