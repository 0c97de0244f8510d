"""Drivers: run an operation generator (engine/ops.py) against a real client."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from redis import exceptions as redis_errors

from engine import limits
from engine.commands import Batch, Call, Command, Op, Script
from engine.errors import ReserveError, Unavailable
from engine.scripts import ScriptRegistry

T = TypeVar("T")

_UNAVAILABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)


def _unavailable(exc: Exception) -> Unavailable:
    return Unavailable(f"Redis is unavailable: {type(exc).__name__}", code="redis_unavailable")


class SyncDriver:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.scripts = ScriptRegistry(client)

    def execute(self, command: Command) -> Any:
        if isinstance(command, Script):
            return self.scripts[command.name](keys=command.keys, args=command.args)
        if isinstance(command, Call):
            return getattr(self.client, command.method)(*command.args)
        pipe = self.client.pipeline(transaction=False)
        for item in command.items:
            if isinstance(item, Script):
                self.scripts[item.name](keys=item.keys, args=item.args, client=pipe)
            else:
                getattr(pipe, item.method)(*item.args)
        return pipe.execute()

    def run(self, op: Op[T]) -> T:
        reply: Any = None
        try:
            while True:
                command = op.send(reply)
                reply = self.execute(command)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except ReserveError:
            raise
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc


class AsyncDriver:
    def __init__(self, client: Any, inflight_max: int = limits.redis_connections_max) -> None:
        self.client = client
        self.scripts = ScriptRegistry(client)
        # Commands in flight at once: more would need more connections than the pool holds
        # (the cluster client fails instead of waiting), so callers queue here.
        self._inflight = asyncio.Semaphore(inflight_max)

    async def execute(self, command: Command) -> Any:
        async with self._inflight:
            return await self._execute(command)

    async def _execute(self, command: Command) -> Any:
        if isinstance(command, Script):
            return await self.scripts[command.name](keys=command.keys, args=command.args)
        if isinstance(command, Call):
            return await getattr(self.client, command.method)(*command.args)
        return await self.execute_batch(command)

    async def execute_batch(self, command: Batch) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for item in command.items:
            if isinstance(item, Script):
                await self.scripts[item.name](keys=item.keys, args=item.args, client=pipe)
            else:
                getattr(pipe, item.method)(*item.args)
        return await pipe.execute()  # type: ignore[no-any-return]

    async def run(self, op: Op[T]) -> T:
        reply: Any = None
        try:
            while True:
                command = op.send(reply)
                reply = await self.execute(command)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except ReserveError:
            raise
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
