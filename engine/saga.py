"""Multi-account holds across Redis Cluster slots, as a saga.

When the legs of reserve_many sit in different slots no single script can lock them all, so
each leg is held in turn by reserve.lua; a refusal releases the legs already held. A saga
record, written before the first leg, lets `recover_sagas` undo a saga whose caller crashed
half-way (every step is idempotent on its reference, so undoing twice is harmless).

Before the first leg, `_as_one_slot` reads every leg and refuses what reserve_many.lua would
refuse, so callers get the same answers on a cluster as on one Redis and a refusal writes
nothing. Only a call racing others can be refused half-way: its held legs are then released
(their lock and release stay in the journal) and their references are spent.

    {prefix}:{s<N>}:saga:<id>   hash: legs (JSON [[label, amount_minor, ref], ...]), started_ms
    {prefix}:{s<N>}:sagas       zset: saga id -> started_ms, the sagas not yet settled
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine import limits
from engine.commands import Batch, Call, Op, Script
from engine.errors import (
    HoldAlreadyEnded,
    HoldNotFound,
    InsufficientReserve,
    ResultCode,
    raise_for_code,
)
from engine.references import stored_reference
from engine.types import Balance, HoldResult, HoldState

if TYPE_CHECKING:
    from engine.ops import AccountSpec, Ops


def _keys(ops: Ops, saga_id: str) -> tuple[str, str]:
    shard = ops.keys.shard_of(saga_id)
    tag = ops.keys.tag(shard)
    return f"{tag}:saga:{saga_id}", f"{tag}:sagas"


def reserve_saga(
    ops: Ops,
    legs: Sequence[tuple[AccountSpec, int, str]],
    operation_type: str,
    ttl_s: int | None,
    metadata: dict[str, Any] | None,
) -> Op[list[HoldResult]]:
    existing = yield from _as_one_slot(ops, legs, operation_type)
    if existing is not None:
        return existing
    saga_id = legs[0][2]
    record_key, open_key = _keys(ops, saga_id)
    now_ms = ops.clock_ms()
    legs_json = _legs_json(legs)
    yield Call("hset", (record_key, None, None, {"legs": legs_json, "started_ms": now_ms}))
    yield Call("zadd", (open_key, {saga_id: now_ms}))
    held: list[HoldResult] = []
    try:
        for spec, amount_minor, ref in legs:
            result = yield from ops.reserve(spec, amount_minor, ref, operation_type, ttl_s, metadata)
            held.append(result)
            if result.hold.state is not HoldState.pending:
                # a repeat of a saga that was rolled back: its references are spent
                raise HoldAlreadyEnded(
                    f"Hold {ref} was already {result.hold.state.value}; use new references",
                    code="hold_already_ended", state=result.hold.state.value,
                )
    except Exception as exc:
        for result in held:
            if result.applied:
                yield from ops.release(result.hold.reference_id, {"saga": "rollback"})
        yield from _settle(record_key, open_key, saga_id)
        if isinstance(exc, InsufficientReserve):
            # as one slot says it: the legs on the short account so far, against its balance
            spec = legs[len(held)][0]
            balance = yield from ops.balance(spec)
            raise ops._insufficient(balance, _wanted(legs, len(held))[spec.label]) from exc
        raise
    yield from _settle(record_key, open_key, saga_id)
    return held


def _legs_json(legs: Sequence[tuple[AccountSpec, int, str]]) -> str:
    return json.dumps([[spec.label, amount, ref] for spec, amount, ref in legs])


def _wanted(legs: Sequence[tuple[AccountSpec, int, str]], last: int) -> dict[str, int]:
    """Minor units asked per account label by legs[0..last]: legs on one account add up."""
    wanted: dict[str, int] = {}
    for spec, amount_minor, _ in legs[:last + 1]:
        wanted[spec.label] = wanted.get(spec.label, 0) + amount_minor
    return wanted


def _as_one_slot(
    ops: Ops, legs: Sequence[tuple[AccountSpec, int, str]], operation_type: str
) -> Op[list[HoldResult] | None]:
    """reserve_many.lua's checks, in the same order, before anything is locked: every leg held
    as asked -> those holds (ok_existing); a leg held with another amount or operation type, a
    leg's reference on another account, or only some legs held -> reference_conflict; legs
    adding up to more than an account's available -> exceeds_available. None: go ahead with the
    saga, also when some legs are held by this same saga left unsettled (a retry after a crash
    finishes it)."""
    accounts = []
    for spec, _, _ in legs:
        accounts.append((yield from ops.open_account(spec)))
    for label in dict.fromkeys(spec.label for spec, _, _ in legs):
        yield from _expire_due(ops, label)  # the script's side work, done first as it does
    record_key, _ = _keys(ops, legs[0][2])
    reads: list[Call] = []
    for spec, _, ref in legs:
        k = ops.keys.account(spec.label)
        reads += [Call("hget", (k.holds, ref)), Call("hget", (ops.keys.index(ref)[1], ref)),
                  Call("hmget", (k.acct, "total", "locked"))]
    replies = yield Batch((*reads, Call("hget", (record_key, "legs"))))
    if replies[-1] == _legs_json(legs):
        return None  # this saga, unsettled: run it again, adopting the legs it holds
    # a record past the retention that the pruning bound left for later does not count
    cutoff_ms = ops.clock_ms() - ops.retention_ms
    held = 0
    for i, (spec, amount_minor, ref) in enumerate(legs):
        raw, owner = replies[3 * i], replies[3 * i + 1]
        if raw is not None:
            state, amount, _, _, _, ended, op = str(raw).split("|", 6)
            if state != HoldState.pending.value and int(ended) <= cutoff_ms:
                raw = None
        if raw is not None:
            if int(amount) != amount_minor or op != operation_type:
                raise_for_code(ResultCode.reference_conflict, reference_id=ref)
            held += 1
        elif owner is not None and owner != spec.label:
            raise_for_code(ResultCode.reference_conflict, reference_id=ref)
    if held == len(legs):
        results = []
        for i, (spec, _, ref) in enumerate(legs):
            total, locked = replies[3 * i + 2]
            hold = yield from ops.get_hold(ref)
            ops._remember(ref, spec.label)
            results.append(HoldResult(hold, Balance(accounts[i], int(total), int(locked)),
                                      False, 0))
        return results
    if held:
        raise_for_code(ResultCode.reference_conflict, reference_id=legs[0][2])
    for i, (spec, _, _) in enumerate(legs):
        total, locked = (int(v or 0) for v in replies[3 * i + 2])
        wanted_minor = _wanted(legs, i)[spec.label]
        if wanted_minor > total - locked:
            raise ops._insufficient(Balance(accounts[i], total, locked), wanted_minor)
    return None


def _expire_due(ops: Ops, label: str) -> Op[int]:
    """End the account's holds past their TTL and forget old records, as reserve_many.lua does
    before its checks (bounded as there)."""
    k = ops.keys.account(label)
    keys, _ = ops._script_keys(k, label)
    reply = yield Script("expire", keys, [*ops._common(k.shard), label, ops.retention_ms,
                                          limits.expire_per_call_max, limits.prune_per_call_max])
    return int(reply[1])


def _settle(record_key: str, open_key: str, saga_id: str) -> Op[None]:
    yield Call("zrem", (open_key, saga_id))
    yield Call("delete", (record_key,))


def recover_sagas(ops: Ops, older_than_s: float = limits.saga_stale_s) -> Op[int]:
    """Undo every saga left half-way for longer than older_than_s: release its held legs."""
    cutoff_ms = ops.clock_ms() - int(older_than_s * 1000)
    undone = 0
    for shard in range(ops.keys.shard_count):
        open_key = f"{ops.keys.tag(shard)}:sagas"
        stale = yield Call("zrangebyscore", (open_key, "-inf", cutoff_ms, 0,
                                             limits.saga_recover_per_pass_max))
        for saga_id in stale:
            record_key, _ = _keys(ops, saga_id)
            legs_json = yield Call("hget", (record_key, "legs"))
            for _label, _amount, ref in json.loads(legs_json or "[]"):
                try:
                    yield from ops.release(stored_reference(ref), {"saga": "recovered"})
                except (HoldNotFound, HoldAlreadyEnded):
                    pass  # never held, or already ended: nothing to undo
            yield from _settle(record_key, open_key, saga_id)
            undone += 1
    return undone
