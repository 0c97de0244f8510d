"""The liquidity requests in Redis, changed only through two scripts (create.lua, advance.lua).

Keys, all under shard 0's hash tag (one slot, like the alert book):

    {tag}:liquidity:r:<reference>          hash: the request's record
    {tag}:liquidity:index                  sorted set: reference by created_ms
    {tag}:liquidity:open                   hash: account -> reference of its open request
    {tag}:liquidity:used:<account>:<day>   minor units requested on that UTC day

States: requested (waiting to be sent, or retried after a provider failure) -> pending (the
provider accepted) -> confirmed (its signed success callback arrived) -> completed (the top-up
is journalled). Or failed (the provider said so), or flagged (attempts exhausted, or no
callback in time: an operator must look; a late success callback still completes it), which
an operator may dismiss (they see to the reserve themselves).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from engine.keys import KeySpace
from engine.liquidity import limits

OPEN_STATES = ("requested", "pending", "confirmed")
STATES = (*OPEN_STATES, "completed", "failed", "flagged", "dismissed")
DAY_MS = 86_400_000


def _script(name: str) -> str:
    return resources.files("engine.liquidity").joinpath(name).read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Created:
    code: int  # 0 created, 1 exists, 2 another open, 3 cap reached
    amount_minor: int
    detail: str


class RequestBook:
    def __init__(self, client: Any, keys: KeySpace) -> None:
        self.client = client
        self.tag = keys.tag(0)
        self.index_key = f"{self.tag}:liquidity:index"
        self.open_key = f"{self.tag}:liquidity:open"
        self._create = client.register_script(_script("create.lua"))
        self._advance = client.register_script(_script("advance.lua"))

    def request_key(self, reference: str) -> str:
        return f"{self.tag}:liquidity:r:{reference}"

    def used_key(self, account: str, day: int) -> str:
        return f"{self.tag}:liquidity:used:{account}:{day}"

    async def create(self, now_ms: int, reference: str, account: str, amount_minor: int,
                     cap_minor: int, fields: dict[str, str]) -> Created:
        assert amount_minor > 0
        assert cap_minor > 0
        day = now_ms // DAY_MS
        args: list[str | int] = [now_ms, reference, account, amount_minor, cap_minor,
                                 limits.request_record_ttl_s, 2 * DAY_MS // 1000,
                                 now_ms - limits.request_record_ttl_s * 1000, "day", day]
        for name, value in fields.items():
            args += [name, value]
        code, amount, detail = await self._create(
            keys=[self.request_key(reference), self.index_key, self.open_key,
                  self.used_key(account, day)], args=args)
        return Created(int(code), int(amount), str(detail))

    async def advance(self, now_ms: int, record: dict[str, str], from_states: tuple[str, ...],
                      to_state: str, fields: dict[str, str | int] | None = None, *,
                      due_ms: int = 0, close: bool = False,
                      release_cap: bool = False) -> tuple[int, str]:
        """(0, new state) if applied; (2, its state) if it was not in from_states; (3, ...)
        if not due. record: the request as last read (its account and day)."""
        assert to_state in STATES
        args: list[str | int] = [now_ms, ",".join(from_states), to_state, due_ms,
                                 int(close), int(release_cap)]
        for name, value in (fields or {}).items():
            args += [name, value]
        code, state = await self._advance(
            keys=[self.request_key(record["reference"]), self.open_key,
                  self.used_key(record["account"], int(record["day"]))], args=args)
        return int(code), str(state)

    async def get(self, reference: str) -> dict[str, str] | None:
        record = await self.client.hgetall(self.request_key(reference))
        return dict(record) if record else None

    async def open_references(self) -> list[str]:
        return sorted((await self.client.hgetall(self.open_key)).values())

    async def used_minor(self, account: str, now_ms: int) -> int:
        return int(await self.client.get(self.used_key(account, now_ms // DAY_MS)) or 0)

    async def recent(self, count: int) -> list[dict[str, str]]:
        """The newest requests, newest first."""
        count = max(1, min(count, limits.requests_listed_max))
        references = await self.client.zrevrange(self.index_key, 0, count - 1)
        out = []
        for reference in references:
            record = await self.get(reference)
            if record is not None:
                out.append(record)
        return out
