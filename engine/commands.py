"""What an operation asks Redis to do, as plain values (sans-IO).

Operations in engine/ops.py are generators that yield these and receive the replies; the
drivers in engine/drivers.py run them on a sync, asyncio or batching client. One copy of the
logic serves every client.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar


# Not frozen: the hot path builds one per operation, and a frozen dataclass's __init__ costs
# several times more. Treat it as a value all the same.
@dataclass(slots=True)
class Script:
    """EVALSHA of one script in lua/ (re-loaded on NOSCRIPT)."""

    name: str
    keys: list[str]
    args: list[str | int]


@dataclass(frozen=True, slots=True)
class Call:
    """A plain Redis command, by redis-py method name."""

    method: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Batch:
    """Several commands sent in one round trip (a non-transactional pipeline); replies in order."""

    items: tuple[Script | Call, ...]


Command = Script | Call | Batch
T = TypeVar("T")
Op = Generator[Command, Any, T]
