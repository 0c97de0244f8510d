"""Drivers: run an operation generator (engine/ops.py) against a real client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from redis import exceptions as redis_errors

from engine import limits
from engine.commands import Batch, Call, Command, Op, Script
from engine.errors import ReserveError, Unavailable
from engine.scripts import ScriptRegistry

T = TypeVar("T")

log = logging.getLogger("reserves.engine")

# Failures that mean Redis could not be reached or refused the command for now (also for
# callers using the client directly): 503, the outcome is to be learnt by retrying.
UNAVAILABLE_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError,
                      redis_errors.ResponseError)

# Redis answered with a refusal: (error prefix, redis-py's class of it, the 503's code, what it
# means). redis-py maps some prefixes to classes and strips them from the text (LOADING is a
# ConnectionError to it), BUSY it leaves in the text; a script's redis.call error keeps its prefix.
_REFUSALS = (
    ("OOM", redis_errors.OutOfMemoryError, "redis_out_of_memory", "Redis is out of memory"),
    ("READONLY", redis_errors.ReadOnlyError, "redis_read_only", "Redis is a read-only replica"),
    ("BUSY", None, "redis_busy", "Redis is busy running a script"),
    ("LOADING", redis_errors.BusyLoadingError, "redis_loading", "Redis is loading its data"),
    ("MASTERDOWN", redis_errors.MasterDownError, "redis_master_down",
     "Redis has lost its master"),
    ("TRYAGAIN", redis_errors.TryAgainError, "redis_try_again", "Redis asks to try again"),
)


def unavailable(exc: Exception) -> Unavailable:
    """The one place a Redis failure becomes a 503, with a code saying which."""
    text = str(exc)
    for prefix, error_type, code, message in _REFUSALS:
        if (error_type is not None and isinstance(exc, error_type)) or text.startswith(
                prefix + " "):
            return Unavailable(f"{message}; retry later", code=code)
    if isinstance(exc, redis_errors.ResponseError):
        log.error("Redis refused a command: %s", text)  # the text may name keys: not answered
        return Unavailable("Redis refused the command; retry later", code="redis_error")
    return Unavailable(f"Redis is unavailable: {type(exc).__name__}", code="redis_unavailable")


def _check_acked(acked: int, wanted: int) -> None:
    if int(acked) < wanted:
        # The write is on the master but not yet confirmed by enough replicas: a failover now
        # could lose it. The caller retries with the same reference, which is idempotent.
        raise Unavailable(
            f"Write not confirmed by {wanted} replica(s) in time (got {acked}); retry the call",
            code="durability_unconfirmed",
        )


def is_cluster_client(client: Any) -> bool:
    return hasattr(client, "get_node_from_key")


class SyncDriver:
    """Runs operations on a sync client. With wait_replicas > 0 every script is followed by
    WAIT on the same connection (same node in a cluster), so a reply means the write reached
    that many replicas."""

    def __init__(self, client: Any, wait_replicas: int = 0, wait_timeout_ms: int = 1000) -> None:
        self.client = client
        self.scripts = ScriptRegistry(client)
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms

    def _script_waited(self, command: Script) -> Any:
        node_client = self.client
        if is_cluster_client(self.client):
            node_client = self.client.get_node_from_key(command.keys[0]).redis_connection
        pipe = node_client.pipeline(transaction=False)
        self.scripts[command.name](keys=command.keys, args=command.args, client=pipe)
        pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
        reply, acked = pipe.execute()
        _check_acked(acked, self.wait_replicas)
        return reply

    def execute(self, command: Command) -> Any:
        if isinstance(command, Script):
            if self.wait_replicas:
                return self._script_waited(command)
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
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(exc) from exc


class AsyncDriver:
    """Runs operations on an asyncio client (WAIT as in SyncDriver)."""

    def __init__(self, client: Any, inflight_max: int = limits.redis_connections_max,
                 wait_replicas: int = 0, wait_timeout_ms: int = 1000) -> None:
        self.client = client
        self.scripts = ScriptRegistry(client)
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._node_clients: dict[str, Any] = {}
        # An asyncio RedisCluster learns its slots on first use; a burst of first commands
        # before that is routed without them, gets MOVED and resets the client under the
        # other commands (redis-py 8.1): so the first run initializes it alone.
        self._cluster_uninitialized = is_cluster_client(client)
        # Commands in flight at once: more would need more connections than the pool holds
        # (the cluster client fails instead of waiting), so callers queue here.
        self._inflight = asyncio.Semaphore(inflight_max)

    def execute(self, command: Command) -> Awaitable[Any]:
        return self._execute_limited(command)

    async def _execute_limited(self, command: Command) -> Any:
        async with self._inflight:
            return await self._execute(command)

    async def _script_waited(self, command: Script) -> Any:
        node_client = self.client
        if is_cluster_client(self.client):
            node = self.client.get_node_from_key(command.keys[0])
            node_client = self._node_clients.get(node.name)
            if node_client is None:
                import redis.asyncio

                node_client = redis.asyncio.Redis(host=node.host, port=node.port,
                                                  decode_responses=True)
                self._node_clients[node.name] = node_client
        pipe = node_client.pipeline(transaction=False)
        await self.scripts[command.name](keys=command.keys, args=command.args, client=pipe)
        pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
        reply, acked = await pipe.execute()
        _check_acked(acked, self.wait_replicas)
        return reply

    async def _execute(self, command: Command) -> Any:
        if isinstance(command, Script):
            if self.wait_replicas:
                return await self._script_waited(command)
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
            if self._cluster_uninitialized:
                await self.client.initialize()  # idempotent, under the client's own lock
                self._cluster_uninitialized = False
            while True:
                command = op.send(reply)
                reply = await self.execute(command)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except ReserveError:
            raise
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(exc) from exc
