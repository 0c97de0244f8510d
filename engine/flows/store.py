"""Flow records in Redis, written with plain commands: they record progress, no money moves.

    {prefix}:flow:<kind>:<reference_id>   hash: request (canonical JSON), state, amounts, ...
    {prefix}:flow:open                    zset: "<kind>:<reference_id>" -> deadline_ms, the flows
                                          not yet settled (recover() looks at those past it)
    {prefix}:flow:quote:<quote_id>        hash: a quote (Redis TTL: a little past its expiry)
    {prefix}:flow:ptx:<provider_tx_id>    string: "<kind>:<reference_id>" of a mobile-money flow
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from engine.commands import Call, Op
from engine.engine import ReserveEngine
from engine.flows import limits
from engine.money import exact_json
from engine.monitoring import metrics


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


class FlowStore:
    def __init__(self, engine: ReserveEngine) -> None:
        self.engine = engine
        self.prefix = engine.settings.key_prefix
        self.open_key = f"{self.prefix}:flow:open"

    def key(self, kind: str, reference_id: str) -> str:
        return f"{self.prefix}:flow:{kind}:{reference_id}"

    async def claim(self, kind: str, reference_id: str, request: dict[str, Any]) -> bool:
        """True when this call created the record (a first request), False for a repeat."""
        won = await self.engine.run(call("hsetnx", self.key(kind, reference_id), "request",
                                         canonical(request)))
        return bool(won)

    async def load(self, kind: str, reference_id: str) -> dict[str, str]:
        return dict(await self.engine.run(call("hgetall", self.key(kind, reference_id))))

    async def update(self, kind: str, reference_id: str, **fields: Any) -> None:
        mapping = {k: v if isinstance(v, str) else encode(v) for k, v in fields.items()}
        mapping["updated_ms"] = str(self.engine.ops.clock_ms())
        key = self.key(kind, reference_id)
        await self.engine.run(call("hset", key, None, None, mapping))
        await self.engine.run(call("expire", key, limits.flow_record_ttl_s))

    async def set_first(self, kind: str, reference_id: str, field: str, value: str) -> str:
        """Write field unless set; return the value that stands (first writer wins)."""
        key = self.key(kind, reference_id)
        await self.engine.run(call("hsetnx", key, field, value))
        return str(await self.engine.run(call("hget", key, field)))

    async def mark_open(self, kind: str, reference_id: str, deadline_ms: int) -> None:
        await self.engine.run(call("zadd", self.open_key, {f"{kind}:{reference_id}": deadline_ms}))

    async def mark_settled(self, kind: str, reference_id: str) -> None:
        await self.engine.run(call("zrem", self.open_key, f"{kind}:{reference_id}"))

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
        metrics.count_flow_end(action)  # the success rate's counters (terminal actions only)
