"""Micro-batching of the hot path: concurrent reserve / commit / release calls share round trips.

The operations in engine/ops.py stay as they are: each still yields its own `Script("reserve",
...)` and receives that script's reply. BatchingDriver catches those three scripts, queues them
per shard (every key of a shard shares its hash tag, so one call is one Redis Cluster slot) and
sends whatever queued while the previous batch was in flight as one EVALSHA of
lua/hold_batch.lua. That script runs each operation with the same Lua functions as the
one-operation scripts (lua/lib/holds.lua), one after the other, each with its own reply and its
own journal event; the reply goes back to the waiting operation, which turns it into its result
or exception exactly as without batching (account re-open, stale label retry and all).

Per-operation semantics do not change: an operation is atomic (the whole batch is, which is
stronger), a refused one writes nothing and does not affect the others, and repeats are
idempotent. One thing is shared: the batch runs on one clock reading, the latest of its
operations' (a few microseconds apart).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import redis.asyncio
from redis import exceptions as redis_errors

from engine import limits
from engine.commands import Call, Command, Script
from engine.drivers import AsyncDriver, is_cluster_client
from engine.errors import Unavailable

# Errors after which a batch goes through RedisCluster's own routing (_evalsha_on_node).
_CLUSTER_REROUTED_ERRORS = (
    redis_errors.MovedError, redis_errors.AskError, redis_errors.TryAgainError,
    redis_errors.ClusterDownError, redis_errors.SlotNotCoveredError,
    redis_errors.NoScriptError, redis_errors.ConnectionError, redis_errors.TimeoutError,
    redis_errors.MaxConnectionsError,
)

# Single-key calls of the hot path that a cluster client sends straight to the key's node.
_NODE_CALLS = {"hsetnx": "HSETNX", "hget": "HGET"}

# Script name -> the batch script's operation kind.
BATCHED_KINDS = {"reserve": "r", "commit": "c", "release": "x"}
_ACCOUNT_KEYS_COUNT = 5  # acct, holds, expiry, ended, ops (lua/hold_batch.lua)


_hiredis_pack: Any
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # redis-py's own packer then
    _hiredis_pack = None


class FastPackConnection(redis.asyncio.Connection):
    """redis-py's asyncio connection, packing commands with hiredis: a batch call carries a few
    hundred arguments, which redis-py's pure-Python packer (bytes joined argument by argument)
    encodes about 6x slower. Anything hiredis refuses (bool, None) goes to redis-py's packer,
    which raises its usual error."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # 'CLIENT SETINFO': words apart
            args = (*args[0].split(), *args[1:])
        try:
            return [_hiredis_pack(args)]
        except TypeError:
            return super().pack_command(*args)


def use_fast_pack(client: Any) -> bool:
    """Make an asyncio client's future connections pack with hiredis (when installed): a plain
    client's pool, or every node a RedisCluster knows or will discover (the class rides in the
    connection settings it hands each node; left alone if they are not what redis-py 8 has)."""
    if _hiredis_pack is None:
        return False
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        if pool.connection_class is not redis.asyncio.Connection:
            return False
        pool.connection_class = FastPackConnection
        return True
    nodes_manager = getattr(client, "nodes_manager", None)
    settings = [getattr(client, "connection_kwargs", None),
                getattr(nodes_manager, "connection_kwargs", None)]
    if nodes_manager is None or not all(isinstance(s, dict) and s.get("connection_class")
                                        is redis.asyncio.Connection for s in settings):
        return False
    for s in settings:
        s["connection_class"] = FastPackConnection
    for node in (*getattr(client, "startup_nodes", ()), *nodes_manager.nodes_cache.values()):
        if node.connection_class is redis.asyncio.Connection and not node._connections:
            node.connection_class = FastPackConnection
    return True


class _ShardQueue:
    """Operations of one shard waiting for the next batch."""

    __slots__ = ("commands", "futures", "inflight", "scheduled")

    def __init__(self) -> None:
        self.commands: list[Script] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.inflight = 0
        self.scheduled = False


def batch_script(commands: list[Script]) -> Script:
    """One hold_batch call for reserve / commit / release commands of one shard (as ops.py
    builds them: KEYS acct, holds, expiry, ended, ops, stream, seq[, index]; ARGV now_ms,
    id_base, id_step, label, reference_id, ..., retention_ms, expire_max, prune_max)."""
    first = commands[0]
    stream, seq = first.keys[5], first.keys[6]
    index: str | None = None
    positions: dict[str, int] = {}
    account_keys: list[str] = []
    labels: list[str | int] = []
    body: list[str | int] = []
    now_ms = 0
    for command in commands:
        op_keys, op_args = command.keys, command.args
        if op_keys[5] != stream:
            raise AssertionError("one batch is one shard")
        if op_args[0] > now_ms:
            now_ms = op_args[0]
        position = positions.get(op_keys[0])
        if position is None:
            account_keys += op_keys[:_ACCOUNT_KEYS_COUNT]
            labels.append(op_args[3])
            position = positions[op_keys[0]] = len(labels)
        use_index = 0
        if len(op_keys) > 7:
            if index is None:
                index = op_keys[7]
            elif index != op_keys[7]:
                raise AssertionError("one index key per shard")
            use_index = 1
        name = command.name
        if name == "reserve":  # label, ref, amount, ttl_ms, operation_type, meta
            body += ("r", position, use_index, op_args[4], op_args[5], op_args[6], op_args[7],
                     op_args[8])
        elif name == "commit":  # label, ref, amount ("" = all), meta, currency
            body += ("c", position, use_index, op_args[4], op_args[5], "", op_args[7], op_args[6])
        else:  # release: label, ref, meta
            body += ("x", position, use_index, op_args[4], "", "", "", op_args[5])
    # KEYS[3] is read only by operations with use_index 1; without one any key of the slot does
    keys = [stream, seq, index or seq, *account_keys]
    retention_ms, expire_max, prune_max = first.args[-3:]
    args: list[str | int] = [now_ms, first.args[1], first.args[2], retention_ms, expire_max,
                             prune_max, len(labels), *labels, len(commands), *body]
    return Script("hold_batch", keys, args)


class BatchingDriver(AsyncDriver):
    """AsyncDriver that coalesces concurrent reserve / commit / release scripts per shard.

    A batch leaves as soon as the event loop has let every caller that was ready add its
    operation; while batches_inflight_max batches of a shard are in flight, new operations wait
    and leave together in the next one (at most batch_ops_max each)."""

    def __init__(
        self,
        client: Any,
        batch_ops_max: int = limits.batch_ops_max,
        batches_inflight_max: int = limits.batches_inflight_per_shard_max,
        queue_ops_max: int = limits.batch_queue_ops_max,
        **kwargs: Any,
    ) -> None:
        super().__init__(client, **kwargs)
        use_fast_pack(client)
        assert 1 <= batch_ops_max <= queue_ops_max
        assert batches_inflight_max >= 1
        self.batch_ops_max = batch_ops_max
        self.batches_inflight_max = batches_inflight_max
        self.queue_ops_max = queue_ops_max
        self._queues: dict[tuple[Any, ...], _ShardQueue] = {}
        # Connections this driver keeps for its batch calls (a plain client without WAIT; else
        # the batch goes the way of any other script). At most one per batch in flight.
        pool = getattr(client, "connection_pool", None)
        self._pool = pool if pool is not None and not self.wait_replicas else None
        self._cluster = is_cluster_client(client) and not self.wait_replicas
        self._idle_connections: list[Any] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches_count = 0  # batches sent, for the benchmarks and tests
        self.batched_ops_count = 0

    def execute(self, command: Command) -> Awaitable[Any]:
        # the batched kinds get their future itself: no coroutine to create and resume per call
        if type(command) is Script and command.name in BATCHED_KINDS:
            return self._submit(command)
        if self._cluster and type(command) is Call and command.method in _NODE_CALLS:
            # the reference index claimed across slots before a reserve (engine/ops.py)
            return self._on_node(command, command.args[0], _NODE_CALLS[command.method],
                                 *command.args)
        return super().execute(command)

    def _submit(self, command: Script) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        # one queue per shard (its stream) and per side-work bounds (the last three ARGV)
        group = (command.keys[5], command.args[-3], command.args[-2], command.args[-1])
        queue = self._queues.get(group)
        if queue is None:
            queue = self._queues[group] = _ShardQueue()
        if len(queue.commands) >= self.queue_ops_max:
            raise Unavailable(
                f"Too many operations waiting for Redis ({self.queue_ops_max}); retry the call",
                code="overloaded",
            )
        future: asyncio.Future[Any] = loop.create_future()
        queue.commands.append(command)
        queue.futures.append(future)
        if not queue.scheduled and queue.inflight < self.batches_inflight_max:
            queue.scheduled = True
            loop.call_soon(self._flush, queue)
        return future

    def _flush(self, queue: _ShardQueue) -> None:
        queue.scheduled = False
        if not queue.commands or queue.inflight >= self.batches_inflight_max:
            return
        # Split what waits over the free slots: with every caller in one batch, Redis would
        # idle while the client handles its replies and the client while Redis runs it; two
        # halves in flight keep both busy (closed-loop callers: latency ~ callers / rate).
        free_count = self.batches_inflight_max - queue.inflight
        size = min(self.batch_ops_max, -(-len(queue.commands) // free_count))
        commands, futures = queue.commands[:size], queue.futures[:size]
        del queue.commands[:size], queue.futures[:size]
        queue.inflight += 1
        task = asyncio.get_running_loop().create_task(self._send(queue, commands, futures))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if queue.commands and queue.inflight < self.batches_inflight_max:
            queue.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush, queue)

    async def _evalsha(self, script: Script) -> Any:
        """EVALSHA on a connection the driver keeps between batches. redis-py's per-command
        layers (pool checkout under a lock with a liveness probe, the retry wrapper, metrics)
        cost about 60 us of CPU per call on the machine of benchmarks/RESULTS.md: a few us per
        batched operation. A repeat after a lost connection is safe (every operation is
        idempotent by its reference), but it is the caller's call: errors go back as they are."""
        if self._cluster:
            return await self._evalsha_on_node(script)
        if self._pool is None:
            return await super().execute(script)
        idle = self._idle_connections
        conn = idle.pop() if idle else await self._pool.get_connection()
        registered = self.scripts[script.name]
        keys, args = script.keys, script.args
        try:
            try:
                await conn.send_command("EVALSHA", registered.sha, len(keys), *keys, *args)
                reply = await conn.read_response()
            except redis_errors.NoScriptError:  # Redis restarted or flushed its scripts
                await conn.send_command("SCRIPT", "LOAD", registered.script)
                await conn.read_response()
                await conn.send_command("EVALSHA", registered.sha, len(keys), *keys, *args)
                reply = await conn.read_response()
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError,
                asyncio.CancelledError):
            # the connection's state is unknown (a reply may be on its way): not reused
            await conn.disconnect(nowait=True)
            await self._pool.release(conn)
            raise
        except BaseException:
            idle.append(conn)
            raise
        idle.append(conn)
        return reply

    async def _evalsha_on_node(self, script: Script) -> Any:
        """EVALSHA straight to the cluster node that holds the batch's slot (a batch is one
        slot), past RedisCluster's per-command layers (key extraction and slot check of every
        key, the redirect loop, metrics). Anything those layers exist for (a moved slot, a node
        down or failing over, a script the node lacks) sends the batch their way instead: an
        error here means the node did not run it, or, for a lost connection, that repeating it
        is safe (every operation is idempotent by its reference)."""
        keys = script.keys
        return await self._on_node(script, keys[0], "EVALSHA", self.scripts[script.name].sha,
                                   len(keys), *keys, *script.args)

    async def _on_node(self, command: Command, key: str, *args: Any) -> Any:
        """args straight to the node holding key's slot; on a routing error, command the usual
        way. Within the same bound on commands in flight (the nodes' pools hold no more)."""
        try:
            async with self._inflight:
                node = self.client.get_node_from_key(key)
                return await node.execute_command(*args)
        except _CLUSTER_REROUTED_ERRORS:
            return await super().execute(command)

    async def _send(self, queue: _ShardQueue, commands: list[Script],
                    futures: list[asyncio.Future[Any]]) -> None:
        try:
            if len(commands) == 1:  # nothing to share: the plain script is cheaper
                replies = [await self._evalsha(commands[0])]
            else:
                replies = await self._evalsha(batch_script(commands))
            assert len(replies) == len(commands)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:  # each caller sees what its own call would have raised
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        else:
            self.batches_count += 1
            self.batched_ops_count += len(commands)
            for future, reply in zip(futures, replies, strict=True):
                if not future.done():  # the caller may have been cancelled meanwhile
                    future.set_result(reply)
        finally:
            queue.inflight -= 1
            if queue.commands and not queue.scheduled:
                queue.scheduled = True
                asyncio.get_running_loop().call_soon(self._flush, queue)
