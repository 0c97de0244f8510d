"""Shared helpers of the persistence tests: a mixed workload, the journal as it stands, and the
Redis + database Stack that the `stack` and `pg_stack` fixtures (tests/persist_fixtures.py)
yield."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from engine.config import Settings
from engine.errors import ReserveError
from engine.journal import JournalEvent
from engine.keys import KeySpace
from engine.service import ReserveService
from persistence.store import Store, close_shared_engines, shared_engine
from persistence.worker import Persister

CURRENCIES = ("USDT", "BTC", "UGX")


class Clock:
    def __init__(self) -> None:
        self.now_ms = time.time_ns() // 1_000_000 - 60_000

    def __call__(self) -> int:
        self.now_ms += 1
        return self.now_ms


@dataclass
class Workload:
    service: ReserveService
    clock: Clock
    rng: random.Random
    pending: list[str] = field(default_factory=list)
    refused_count: int = 0
    applied_count: int = 0
    serial: int = 0

    def _ref(self, kind: str) -> str:
        self.serial += 1
        return f"{kind}-{self.serial}"

    def step(self) -> None:
        ops, rng = self.service.ops, self.rng
        currency = rng.choice(CURRENCIES)
        spec = ops.reserve_spec(currency, None)
        roll = rng.random()
        run = self.service.run
        try:
            if roll < 0.18:
                meta = {"actor": "admin-1", "ip": "10.0.0.1",
                        "request": {"amount": "1"}} if rng.random() < 0.2 else None
                run(ops.top_up(spec, rng.randint(1_000, 5_000_000), self._ref("top"), meta))
            elif roll < 0.26:
                run(ops.withdraw(spec, rng.randint(1, 200_000), self._ref("wd")))
            elif roll < 0.60:
                ttl = rng.choice([None, None, 1, 3600])
                ref = self._ref("h")
                run(ops.reserve(spec, rng.randint(1, 300_000), ref, rng.choice(["swap", "buy"]),
                                ttl))
                self.pending.append(ref)
            elif roll < 0.80 and self.pending:
                ref = self.pending.pop(rng.randrange(len(self.pending)))
                hold = run(ops.get_hold(ref))
                partial = hold.amount_minor > 1 and rng.random() < 0.5
                run(ops.commit(ref, rng.randint(1, hold.amount_minor - 1) if partial else None))
            elif roll < 0.92 and self.pending:
                run(ops.release(self.pending.pop(rng.randrange(len(self.pending)))))
            elif roll < 0.93:
                run(ops.audit("admin-2", "cache_clear", "10.0.0.2", {"request": {"all": True}}))
            elif roll < 0.95:
                user = ops.user_spec(f"u{rng.randint(1, 3)}", currency)
                run(ops.top_up(user, rng.randint(1, 1000), self._ref("utop")))
            else:
                self.clock.now_ms += 2_000  # holds with a 1 s TTL are now due
                run(ops.sweep())
            self.applied_count += 1
        except ReserveError:
            self.refused_count += 1


def make_workload(client: Any, settings: Settings, seed: int = 7) -> Workload:
    clock = Clock()
    service = ReserveService(client, settings, clock_ms=clock)
    workload = Workload(service, clock, random.Random(seed))
    for currency in CURRENCIES:
        spec = service.ops.reserve_spec(currency, None)
        service.run(service.ops.top_up(spec, 10**12, f"seed-{currency}"))
    return workload


def run_workload(client: Any, settings: Settings, steps: int, seed: int = 7) -> Workload:
    """`steps` operations that were applied (refusals are retried with another draw)."""
    workload = make_workload(client, settings, seed)
    for _ in range(2 * steps):  # bounded: refusals are a few percent
        if workload.applied_count >= steps:
            break
        workload.step()
    return workload


def journal(client: Any, settings: Settings) -> list[JournalEvent]:
    """Every event still in the streams, in event id order."""
    events = []
    for stream in KeySpace(settings.key_prefix, settings.shard_count).streams():
        events += [JournalEvent.parse(i, f) for i, f in client.xrange(stream)]
    return sorted(events, key=lambda e: e.event_id)


def redis_balances(client: Any, settings: Settings) -> dict[str, tuple[int, int]]:
    keys = KeySpace(settings.key_prefix, settings.shard_count)
    labels = sorted(label for s in range(keys.shard_count)
                    for label in client.smembers(keys.accounts_set(s)))
    return {label: tuple(int(v) for v in client.hmget(keys.account(label).acct, "total",
                                                      "locked"))  # type: ignore[misc]
            for label in labels}


def redis_pending_holds(client: Any, settings: Settings) -> dict[str, str]:
    keys = KeySpace(settings.key_prefix, settings.shard_count)
    out = {}
    for label in redis_balances(client, settings):
        for ref, raw in client.hgetall(keys.account(label).holds).items():
            if raw.startswith("pending|"):
                out[ref] = f"{label}:{raw}"
    return out


@dataclass
class Stack:
    name: str
    client: Any
    settings: Settings
    database_url: str
    persisters: list[Persister] = field(default_factory=list)

    def store(self) -> Store:
        return Store(self.database_url, shared_engine(self.database_url))

    def persister(self, consumer: str = "p1", **kwargs: Any) -> Persister:
        persister = Persister(self.client, self.settings, self.database_url, consumer, **kwargs)
        self.persisters.append(persister)
        return persister

    def close(self) -> None:
        for persister in self.persisters:
            persister.close()
        close_shared_engines()


def assert_rows_equal_events(stack: Stack, events: list[JournalEvent]) -> None:
    from persistence.store import dt_to_ms

    rows = stack.store().transaction_rows()
    assert [r.event_id for r in rows] == [e.event_id for e in events]
    for row, e in zip(rows, events, strict=True):
        assert (row.operation, row.account, row.reference, row.amount_minor, row.d_total_minor,
                row.d_locked_minor, row.total_after_minor, row.locked_after_minor,
                dt_to_ms(row.created_at), row.metadata or {}) == (
                    e.op, e.account, e.reference, e.amount_minor, e.d_total_minor,
                    e.d_locked_minor, e.total_minor, e.locked_minor, e.ts_ms, e.meta), e
