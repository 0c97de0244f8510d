"""`reserves rebuild`: restore the Redis hot state from the book of record after Redis lost it.

Restores, in the key layout of engine/keys.py: each account hash (balances = the ledger's sums),
the per-shard account sets, the account and event counters (so that new ids continue above
every persisted one), pending holds (holds hash, expiry zset, reference index), and, within the
retention, ended holds and top-up / withdrawal records, so that a repeated call still gets its
first answer. Events that never reached the database are lost with Redis: run the persister
with a small lag.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from engine.config import Settings
from engine.errors import Conflict
from engine.keys import KeySpace
from persistence import limits
from persistence.store import Store, dt_to_ms, ms_to_dt

_TRANSFER_KIND = {"reserve_topup": "topup", "reserve_withdrawal": "withdraw"}


class RebuildRefused(Conflict):
    pass


@dataclass
class RebuildReport:
    accounts_count: int = 0
    pending_holds_count: int = 0
    ended_holds_count: int = 0
    transfers_count: int = 0
    flows_count: int = 0
    warnings: list[str] = field(default_factory=list)


class _Pipe:
    """A pipeline flushed every rebuild_pipeline_max commands (bounded memory and reply size)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pipe = client.pipeline(transaction=False)
        self.count = 0

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            getattr(self.pipe, name)(*args, **kwargs)
            self.count += 1
            if self.count >= limits.rebuild_pipeline_max:
                self.flush()
        return call

    def flush(self) -> None:
        if self.count:
            self.pipe.execute()
        self.count = 0


def _hold_record(row: Any, fallback_ms: int) -> str:
    created_ms = dt_to_ms(row.created_at) if row.created_at is not None else fallback_ms
    expires_ms = dt_to_ms(row.expires_at) if row.expires_at is not None else 0
    ended_ms = dt_to_ms(row.ended_at) if row.ended_at is not None else 0
    return (f"{row.state}|{row.amount_minor}|{row.committed_minor}|{created_ms}|{expires_ms}|"
            f"{ended_ms}|{row.operation_type}")


def _counter(ids: Iterator[int], shard_count: int) -> dict[int, int]:
    """Per shard, the counter value that produced the highest of these ids."""
    counters: dict[int, int] = {}
    for value in ids:
        shard, n = (value - 1) % shard_count, (value - 1) // shard_count + 1
        counters[shard] = max(counters.get(shard, 0), n)
    return counters


def rebuild(
    redis_client: Any, settings: Settings, database_url: str, *, force: bool = False,
    now_ms: int | None = None,
) -> RebuildReport:
    keys = KeySpace(settings.key_prefix, settings.shard_count)
    store = Store(database_url)
    try:
        accounts = store.accounts()
        sums = store.ledger_sums()
        held = store.holds()
        now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        since = ms_to_dt(now_ms) - timedelta(seconds=settings.retention_s)
        since_ms = dt_to_ms(since)
        transfers = store.transfers_since(since)
        max_ids = store.max_event_ids(keys.shard_count)
    finally:
        store.close()
    present = [a.label for a in accounts if redis_client.exists(keys.account(a.label).acct)]
    if present and not force:
        raise RebuildRefused(
            f"Redis already holds {len(present)} of the {len(accounts)} accounts (e.g. "
            f"{present[0]}); rebuild restores lost state only (--force overwrites it)",
            code="rebuild_refused",
        )
    report = RebuildReport()
    pipe = _Pipe(redis_client)
    pending_locked: dict[str, int] = {}
    for row in held:
        k = keys.account(row.account)
        if row.state == "pending":
            pending_locked[row.account] = pending_locked.get(row.account, 0) + row.amount_minor
            pipe.hset(k.holds, row.reference, _hold_record(row, now_ms))
            if row.expires_at is not None:
                pipe.zadd(k.expiry, {row.reference: dt_to_ms(row.expires_at)})
            report.pending_holds_count += 1
        elif row.ended_at is not None and dt_to_ms(row.ended_at) >= since_ms:
            pipe.hset(k.holds, row.reference, _hold_record(row, dt_to_ms(row.ended_at)))
            pipe.zadd(k.ended, {f"h:{row.reference}": dt_to_ms(row.ended_at)})
            report.ended_holds_count += 1
        else:
            continue
        pipe.hset(keys.index(row.reference)[1], row.reference, row.account)
    for t in transfers:
        k = keys.account(t.account)
        ts_ms = dt_to_ms(t.created_at)
        pipe.hset(k.ops, t.reference, f"{_TRANSFER_KIND[t.operation]}|{t.amount_minor}|"
                                      f"{t.event_id}|{t.total_after_minor}|{ts_ms}")
        pipe.zadd(k.ended, {f"o:{t.reference}": ts_ms})
        report.transfers_count += 1
    for a in accounts:
        k = keys.account(a.label)
        ledger = sums.get(a.label)
        total, locked = (ledger.total_minor, ledger.locked_minor) if ledger else (0, 0)
        assert total >= locked >= 0, (a.label, total, locked)
        if locked != pending_locked.get(a.label, 0):
            report.warnings.append(
                f"{a.label}: locked {locked} but its pending holds add up to "
                f"{pending_locked.get(a.label, 0)}")
        pipe.hset(k.acct, mapping={
            "label": a.label, "currency": a.currency, "account_type": a.account_type,
            "kind": a.kind, "account_id": a.id, "account_number": a.account_number,
            "created_ms": dt_to_ms(a.created_at), "total": total, "locked": locked,
        })
        pipe.sadd(keys.accounts_set(k.shard), a.label)
        report.accounts_count += 1
    pipe.flush()
    account_counters = _counter(iter(a.id for a in accounts), keys.shard_count)
    event_counters = {shard: (m - 1) // keys.shard_count + 1 for shard, m in max_ids.items()}
    for shard in range(keys.shard_count):
        for key, value in ((keys.account_seq(shard), account_counters.get(shard, 0)),
                           (keys.seq(shard), event_counters.get(shard, 0))):
            current = int(redis_client.get(key) or 0)
            if value > current:
                redis_client.set(key, value)
    report.flows_count = restore_flows(redis_client, settings, database_url, now_ms)
    return report


def restore_flows(redis_client: Any, settings: Settings, database_url: str, now_ms: int) -> int:
    """The flows' records from their journalled snapshots (audit `flow_state`): each flow's
    latest record within its retention (a record Redis still holds is left as it is), the open
    flows with their deadlines, the flagged ones, and the used marker of every flow ever
    started (a flow reference is never reused). Returns how many records were restored."""
    from engine.flows import limits as flow_limits
    from engine.flows import store as flows
    from engine.flows.mobile_money import KIND as MM_KIND
    from engine.flows.mobile_money import TERMINAL as MM_TERMINAL
    from engine.flows.swap import TERMINAL as SWAP_TERMINAL

    prefix = settings.key_prefix
    latest: dict[tuple[str, str], dict[str, str]] = {}
    store = Store(database_url)
    try:
        for row in store.flow_snapshots():
            snap = row.request or {}
            latest[(str(snap["kind"]), str(snap["reference_id"]))] = dict(snap["record"])
    finally:
        store.close()
    pipe = _Pipe(redis_client)
    restored = 0
    for (kind, ref), record in latest.items():
        member = f"{kind}:{ref}"
        pipe.sadd(flows.used_key(prefix), member)
        ttl_s = (int(record.get("updated_ms", "0")) + flow_limits.flow_record_ttl_s * 1000
                 - now_ms) // 1000
        key = flows.record_key(prefix, kind, ref)
        if ttl_s <= 0 or redis_client.exists(key):
            continue
        pipe.hset(key, mapping=record)
        pipe.expire(key, ttl_s)
        restored += 1
        terminal = MM_TERMINAL if kind == MM_KIND else SWAP_TERMINAL
        if "state" in record and record["state"] not in terminal and "flag" not in record:
            deadline_ms = int(record.get("deadline_ms") or int(record.get("created_ms", "0"))
                              + flow_limits.swap_hold_ttl_s * 1000)
            pipe.zadd(flows.open_key(prefix), {member: deadline_ms})
        if "flag" in record and "settled_by" not in record:
            pipe.zadd(flows.flagged_key(prefix), {member: int(record.get("updated_ms", "0"))})
    pipe.flush()
    return restored
