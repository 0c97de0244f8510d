"""Multi-account holds across Redis Cluster slots, as a saga.

When the legs of reserve_many sit in different slots no single script can lock them all, so
each leg is held in turn by reserve.lua; a refusal releases the legs already held. A saga
record, written before the first leg, lets `recover_sagas` undo a saga whose caller crashed
half-way (every step is idempotent on its reference, so undoing twice is harmless).

    {prefix}:{s<N>}:saga:<id>   hash: legs (JSON [[label, amount_minor, ref], ...]), started_ms
    {prefix}:{s<N>}:sagas       zset: saga id -> started_ms, the sagas not yet settled
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine import limits
from engine.commands import Call, Op
from engine.errors import HoldAlreadyEnded, HoldNotFound
from engine.types import HoldResult, HoldState

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
    saga_id = legs[0][2]
    record_key, open_key = _keys(ops, saga_id)
    now_ms = ops.clock_ms()
    legs_json = json.dumps([[spec.label, amount, ref] for spec, amount, ref in legs])
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
    except Exception:
        for result in held:
            if result.applied:
                yield from ops.release(result.hold.reference_id, {"saga": "rollback"})
        yield from _settle(record_key, open_key, saga_id)
        raise
    yield from _settle(record_key, open_key, saga_id)
    return held


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
                    yield from ops.release(ref, {"saga": "recovered"})
                except (HoldNotFound, HoldAlreadyEnded):
                    pass  # never held, or already ended: nothing to undo
            yield from _settle(record_key, open_key, saga_id)
            undone += 1
    return undone
