"""Flow records in Redis, written with plain commands: they record progress, no money moves.

    {prefix}:flow:<kind>:<reference_id>   hash: request (canonical JSON), state, amounts, ...
    {prefix}:flow:open                    zset: "<kind>:<reference_id>" -> deadline_ms, the flows
                                          not yet settled (recover() looks at those past it; a
                                          failed attempt pushes the score back: the backoff)
    {prefix}:flow:flagged                 zset: "<kind>:<reference_id>" -> flagged_ms, the flows
                                          an operator must look at (GET /wallet/flows/flagged)
    {prefix}:flow:used                    set: "<kind>:<reference_id>" of every flow ever started,
                                          kept for good: a flow reference is never reused
    {prefix}:flow:quote:<quote_id>        hash: a quote (Redis TTL: a little past its expiry)
    {prefix}:flow:ptx:<provider_tx_id>    string: "<kind>:<reference_id>" of a mobile-money flow

Every write of a record also journals the whole record (an audit event `flow_state`, actor
`flows`): it reaches the database by the journal, and `rebuild` (persistence.rebuild) restores
the records, the open and flagged sets and the used set from there.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from engine.commands import Call, Op
from engine.engine import ReserveEngine
from engine.flows import limits
from engine.monitoring.alerts import AlertBook, Transition, Wanted
from engine.money import exact_json
from engine.monitoring import metrics

SNAPSHOT_ACTION = "flow_state"
SNAPSHOT_ACTOR = "flows"
FLAG_ALERT_KIND = "flow_flagged"


def call(method: str, *args: Any) -> Op[Any]:
    return (yield Call(method, args))


def canonical(request: dict[str, Any]) -> str:
    return json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)


def encode(value: Any) -> str:
    """JSON with Decimals as exact numbers, so a recorded answer reads back the same."""
    return exact_json(value, default=str)


def decode(text: str | None) -> dict[str, Any]:
    """A recorded JSON object, numbers with a fraction as Decimal ({} for none)."""
    return dict(json.loads(text, parse_float=Decimal)) if text else {}


def record_key(prefix: str, kind: str, reference_id: str) -> str:
    return f"{prefix}:flow:{kind}:{reference_id}"


def open_key(prefix: str) -> str:
    return f"{prefix}:flow:open"


def flagged_key(prefix: str) -> str:
    return f"{prefix}:flow:flagged"


def used_key(prefix: str) -> str:
    return f"{prefix}:flow:used"


class FlowStore:
    def __init__(self, engine: ReserveEngine) -> None:
        self.engine = engine
        self.prefix = engine.settings.key_prefix
        self.open_key = open_key(self.prefix)
        self.flagged_key = flagged_key(self.prefix)
        self.used_key = used_key(self.prefix)
        self.alerts = AlertBook(engine.client, engine.ops.keys, engine.ops.clock_ms)

    def key(self, kind: str, reference_id: str) -> str:
        return record_key(self.prefix, kind, reference_id)

    async def claim(self, kind: str, reference_id: str, request: dict[str, Any]) -> bool:
        """True when this call created the record (a first request), False for a repeat."""
        won = await self.engine.run(call("hsetnx", self.key(kind, reference_id), "request",
                                         canonical(request)))
        # after the record: whenever the marker is there, so is the record (until it expires)
        await self.engine.run(call("sadd", self.used_key, f"{kind}:{reference_id}"))
        return bool(won)

    async def was_used(self, kind: str, reference_id: str) -> bool:
        """A flow once started with this reference (its record may have expired since)."""
        return bool(await self.engine.run(call("sismember", self.used_key,
                                               f"{kind}:{reference_id}")))

    async def load(self, kind: str, reference_id: str) -> dict[str, str]:
        return dict(await self.engine.run(call("hgetall", self.key(kind, reference_id))))

    async def update(self, kind: str, reference_id: str, **fields: Any) -> None:
        mapping = {k: v if isinstance(v, str) else encode(v) for k, v in fields.items()}
        mapping["updated_ms"] = str(self.engine.ops.clock_ms())
        key = self.key(kind, reference_id)
        await self.engine.run(call("hset", key, None, None, mapping))
        await self.engine.run(call("expire", key, limits.flow_record_ttl_s))
        await self.snapshot(kind, reference_id)

    async def set_first(self, kind: str, reference_id: str, field: str, value: str) -> str:
        """Write field unless set; return the value that stands (first writer wins)."""
        key = self.key(kind, reference_id)
        if await self.engine.run(call("hsetnx", key, field, value)):
            await self.snapshot(kind, reference_id)
        return str(await self.engine.run(call("hget", key, field)))

    async def snapshot(self, kind: str, reference_id: str) -> None:
        """The whole record into the journal, so that it survives Redis (rebuild reads it)."""
        record = await self.load(kind, reference_id)
        if record:
            await self.engine.run(self.engine.ops.audit(SNAPSHOT_ACTOR, SNAPSHOT_ACTION, "", {
                "kind": kind, "reference_id": reference_id, "record": record}))

    async def mark_open(self, kind: str, reference_id: str, deadline_ms: int) -> None:
        await self.engine.run(call("zadd", self.open_key, {f"{kind}:{reference_id}": deadline_ms}))

    async def mark_settled(self, kind: str, reference_id: str) -> None:
        await self.engine.run(call("zrem", self.open_key, f"{kind}:{reference_id}"))

    async def postpone(self, kind: str, reference_id: str, next_attempt_ms: int) -> None:
        """The next recovery attempt of an open flow, no earlier than next_attempt_ms."""
        await self.engine.run(call("zadd", self.open_key,
                                   {f"{kind}:{reference_id}": next_attempt_ms}, False, True))

    async def flag(self, kind: str, reference_id: str, reason: str, error: dict[str, Any]) -> bool:
        """Set the flow aside for an operator (the flagged set, the journal, an alert); True
        when this call flagged it (the first reason stands)."""
        if await self.set_first(kind, reference_id, "flag", reason) != reason:
            return False
        member = f"{kind}:{reference_id}"
        await self.update(kind, reference_id, flag_error=error)
        await self.engine.run(call("zadd", self.flagged_key, {member: self.engine.ops.clock_ms()}))
        await self.journal("flow_flagged", reference_id, {"kind": kind, "flag": reason,
                                                          "error": error})
        message = f"flow {member} flagged ({reason}): {error.get('error', '')}"
        await self.alerts.apply([Transition("raise", f"{member}|{FLAG_ALERT_KIND}", Wanted(
            member, FLAG_ALERT_KIND, "critical", message[:500]))])
        return True

    async def unflag(self, kind: str, reference_id: str) -> None:
        """The operator settled it: out of the flagged set, its alert cleared."""
        member = f"{kind}:{reference_id}"
        await self.engine.run(call("zrem", self.flagged_key, member))
        await self.alerts.apply([Transition("clear", f"{member}|{FLAG_ALERT_KIND}", None)])

    async def flagged(self, count_max: int) -> list[tuple[str, str]]:
        members = await self.engine.run(call("zrange", self.flagged_key, 0, count_max - 1))
        return [tuple(str(m).split(":", 1)) for m in members]  # type: ignore[misc]

    async def due(self, now_ms: int) -> list[tuple[str, str]]:
        members = await self.engine.run(call("zrangebyscore", self.open_key, "-inf", now_ms, 0,
                                              limits.recover_per_pass_max))
        return [tuple(str(m).split(":", 1)) for m in members]  # type: ignore[misc]

    async def open_count(self) -> int:
        return int(await self.engine.run(call("zcard", self.open_key)))

    async def journal(self, action: str, reference_id: str, detail: dict[str, Any]) -> None:
        """A flow's state change into the journal (an audit event: it moves no money)."""
        await self.engine.run(self.engine.ops.audit("flows", action, "", {
            "reference_id": reference_id, **detail}))
        metrics.count_flow_end(action, detail)  # the success rate's counters (flow ends only)
