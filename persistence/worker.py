"""The persister: moves every journal event from the Redis streams into the database.

Shape (as arq / rq): bootstrap (schema, consumer groups) -> bounded poll iterations -> teardown.
One iteration takes at most batch_count_max entries per stream, in this order of preference:
  1. this consumer's own unacknowledged entries (after a restart under the same name),
  2. entries idle longer than claim_idle_ms in other consumers' lists (XAUTOCLAIM: a dead
     persister's batch),
  3. new entries (XREADGROUP '>' with BLOCK).
The batch is written in ONE database transaction and only then acknowledged. A crash between
the two makes the batch come back; the write is idempotent on the event id, so the effect is
exactly once. While the database (or Redis) is unreachable the batch is kept and retried with
backoff; errors not classified as transient stop the persister loudly. An event whose id the
ledger holds with OTHER content (Redis lost data and handed the id out again) is never taken
for a duplicate: the batch is rolled back and kept unacknowledged, the persister stops, logs
it and leaves a report in Redis (`{prefix}:ledger_divergence`) that /health and /metrics show.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from redis import exceptions as redis_errors

from engine.config import Settings
from engine.journal import JournalEvent
from engine.keys import KeySpace
from persistence import limits
from persistence.errors import LedgerDiverged, StoreUnavailable
from persistence.migrate import ensure_schema
from persistence.store import Store

log = logging.getLogger("reserves.persister")
T = TypeVar("T")

GROUP = "persister"
_TRANSIENT = (StoreUnavailable, redis_errors.ConnectionError, redis_errors.TimeoutError)


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _raw_streams(response: Any, **_options: Any) -> Any:
    """XREADGROUP's reply as Redis sends it (RESP2 list or RESP3 map of stream -> entries), each
    entry's fields left a flat [name, value, ...] list: redis-py's own parser builds a dict per
    entry, which cost more than the rest of reading an event."""
    if not response:
        return []
    return list(response.items()) if isinstance(response, dict) else response


def _raw_reader(client: Any) -> Any:
    """A client on the same connections whose XREADGROUP replies stay raw; a cluster client
    keeps its own parsing (JournalEvent.parse takes both shapes)."""
    if not isinstance(client, redis.Redis):
        return client
    raw = redis.Redis(connection_pool=client.connection_pool)
    raw.set_response_callback("XREADGROUP", _raw_streams)
    return raw


@dataclass
class Batch:
    entries: list[tuple[str, str, dict[str, str] | list[str] | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)


class Persister:
    def __init__(
        self,
        redis_client: Any,
        settings: Settings,
        database_url: str,
        consumer: str | None = None,
        *,
        group: str = GROUP,
        batch_count_max: int = limits.batch_count_max,
        read_block_ms: int = limits.read_block_ms,
        claim_idle_ms: int = limits.claim_idle_ms,
        store: Store | None = None,
    ) -> None:
        assert 1 <= batch_count_max <= 100_000
        self.redis = redis_client
        self.settings = settings
        self.database_url = database_url
        self.consumer = consumer or default_consumer()
        self.group = group
        self.batch_count_max = batch_count_max
        self.read_block_ms = read_block_ms
        self.claim_idle_ms = claim_idle_ms
        self.keys = KeySpace(settings.key_prefix, settings.shard_count)
        self.streams = self.keys.streams()
        self.store = store or Store(database_url)
        self.written_count = 0
        self.retry_count = 0  # transient failures so far (observability)
        self.divergence: str | None = None  # why it stopped on a divergence, if it did
        self._batch = Batch()  # read, not yet acknowledged: retried until it is
        # The batch being written and acknowledged by the writer thread, while the next is read
        # and parsed here: the database's time overlaps the reading instead of adding to it.
        self._inflight: tuple[Batch, Future[None]] | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._raw = _raw_reader(redis_client)
        self._own_pending_done: set[str] = set()
        self._next_claim_s = 0.0
        self._next_trim_s = 0.0
        self._bootstrapped = False

    # -- lifecycle ------------------------------------------------------------------------------

    def bootstrap(self) -> None:
        ensure_schema(self.database_url)
        self._create_groups()
        self._bootstrapped = True

    def _create_groups(self) -> None:
        for stream in self.streams:
            try:
                self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._own_pending_done.clear()

    def run(self, stop: threading.Event) -> None:
        """Persist until stop is set; then finish the batch in hand (up to a deadline)."""
        log.info("persister %s: %d stream(s) -> %s", self.consumer, len(self.streams),
                 self.store.engine.url.render_as_string(hide_password=True))
        self._retry(self.bootstrap, stop)
        if not self._bootstrapped:  # stopped while the database was still unreachable
            return
        try:
            while not stop.is_set():
                self._retry(lambda: self.poll_once(self.read_block_ms), stop)
        except Exception:
            log.exception("persister %s stopped by an error that is not transient", self.consumer)
            raise
        finally:
            self.teardown()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        self.store.close()

    def teardown(self) -> None:
        deadline = time.monotonic() + limits.shutdown_deadline_s
        try:
            self._finish_inflight()
        except _TRANSIENT as exc:  # its batch is back in hand: retried below
            log.warning("shutdown: batch not written yet (%s)", exc)
        while self._batch and time.monotonic() < deadline:
            try:
                self._flush()
            except _TRANSIENT as exc:
                log.warning("shutdown: batch not written yet (%s)", exc)
                time.sleep(min(limits.backoff_s_max, max(0.0, deadline - time.monotonic())))
        if self._batch:
            log.warning("shutdown: %d entries left pending; another persister will claim them",
                        len(self._batch))

    def drain(self, timeout_s: float = limits.drain_timeout_s_default) -> int:
        """Persist until every stream is fully acknowledged; returns the events written."""
        deadline = time.monotonic() + timeout_s
        stop = threading.Event()
        start_count = self.written_count
        self._retry(self.bootstrap, stop, deadline)
        self._next_claim_s = 0.0
        while time.monotonic() < deadline:
            taken = self._retry(lambda: self.poll_once(None), stop, deadline)
            if not taken and not self._batch and self._all_acknowledged():
                break
        else:
            log.warning("drain: not every entry was persisted within %.1f s", timeout_s)
        self._retry(self.trim, stop, deadline)
        return self.written_count - start_count

    def _retry(self, fn: Callable[[], T], stop: threading.Event,
               deadline: float | None = None) -> T | None:
        """fn(), retried with exponential backoff and full jitter on transient errors only."""
        attempt = 0
        while True:
            try:
                return fn()
            except _TRANSIENT as exc:
                delay_s = random.uniform(0, min(limits.backoff_s_max,
                                                limits.backoff_s_base * 2 ** min(attempt, 16)))
                attempt += 1
                self.retry_count += 1
                log.warning("persister: %s; retry %d in %.2f s", exc, attempt, delay_s)
                if deadline is not None and time.monotonic() + delay_s > deadline:
                    raise
                if stop.wait(delay_s):
                    return None
            except redis_errors.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("persister: consumer group missing (Redis data lost?); recreating")
                self._create_groups()

    # -- one iteration ----------------------------------------------------------------------------

    def poll_once(self, block_ms: int | None) -> int:
        """Read (or keep) a batch and hand it to the writer thread, which writes it and then
        acknowledges it, once the batch before it is done. Returns the entries taken; when it
        returns 0, nothing is in flight any more."""
        if not self._bootstrapped:
            self.bootstrap()
        if not self._batch:
            self._batch = self._read(block_ms)
        taken = len(self._batch)
        self._finish_inflight()
        if self._batch:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="persister-writer")
            batch, self._batch = self._batch, Batch()
            self._inflight = (batch, self._writer.submit(self._write_and_ack, batch))
        now_s = time.monotonic()
        if now_s >= self._next_trim_s:
            self._next_trim_s = now_s + limits.trim_interval_s
            self.trim()
        return taken

    def _read(self, block_ms: int | None) -> Batch:
        batch = Batch()
        for stream in self.streams:
            if stream in self._own_pending_done:
                continue
            reply = self._raw.xreadgroup(self.group, self.consumer, {stream: "0"},
                                         count=self.batch_count_max)
            entries = reply[0][1] if reply else []
            if not entries:
                self._own_pending_done.add(stream)
            batch.entries += [(stream, entry_id, fields) for entry_id, fields in entries]
        if batch:
            return batch
        now_s = time.monotonic()
        if now_s >= self._next_claim_s:
            batch = self._claim()
            if batch:
                return batch
            self._next_claim_s = now_s + limits.claim_interval_s
        if self.settings.redis_cluster and len(self.streams) > 1:
            return self._read_each(block_ms)
        reply = self._raw.xreadgroup(self.group, self.consumer, dict.fromkeys(self.streams, ">"),
                                     count=self.batch_count_max, block=block_ms)
        for stream, entries in reply or []:
            batch.entries += [(stream, entry_id, fields) for entry_id, fields in entries]
        return batch

    def _read_each(self, block_ms: int | None) -> Batch:
        """On a cluster the streams live in different slots: one XREADGROUP each, no BLOCK;
        when all are empty, pause (at most block_ms) before the next iteration."""
        batch = Batch()
        for stream in self.streams:
            reply = self.redis.xreadgroup(self.group, self.consumer, {stream: ">"},
                                          count=self.batch_count_max)
            for _, entries in reply or []:
                batch.entries += [(stream, entry_id, fields) for entry_id, fields in entries]
        if not batch and block_ms:
            time.sleep(min(block_ms, limits.cluster_idle_poll_ms) / 1000)
        return batch

    def _claim(self) -> Batch:
        batch = Batch()
        for stream in self.streams:
            reply = self.redis.xautoclaim(stream, self.group, self.consumer,
                                          min_idle_time=self.claim_idle_ms, start_id="0-0",
                                          count=self.batch_count_max)
            entries = reply[1]
            if entries:
                log.info("persister: claimed %d idle entries of %s", len(entries), stream)
            batch.entries += [(stream, entry_id, fields) for entry_id, fields in entries]
            self._forget_idle_consumers(stream)
        return batch

    def _forget_idle_consumers(self, stream: str) -> None:
        for info in self.redis.xinfo_consumers(stream, self.group):
            if (info["name"] != self.consumer and int(info["pending"]) == 0
                    and int(info["idle"]) > limits.consumer_idle_ms_max):
                self.redis.xgroup_delconsumer(stream, self.group, info["name"])

    def _finish_inflight(self) -> None:
        """Wait for the batch in the writer's hands. If it failed, it is in hand again, ahead of
        anything read since (so that batches reach the database in journal order), and its
        error is raised here."""
        if self._inflight is None:
            return
        batch, future = self._inflight
        self._inflight = None
        try:
            future.result()
        except BaseException:
            batch.entries += self._batch.entries
            self._batch = batch
            raise

    def _flush(self) -> None:
        """Write and acknowledge the batch in hand, in this thread."""
        self._write_and_ack(self._batch)
        self._batch = Batch()

    def _write_and_ack(self, batch: Batch) -> None:
        events = []
        for stream, entry_id, fields in batch.entries:
            if not fields:  # deleted from the stream while pending: nothing left to write
                log.warning("persister: entry %s of %s has no data; acknowledging", entry_id, stream)
                continue
            events.append(JournalEvent.parse(entry_id, fields))
        try:
            written = self.store.write_batch(events) if events else 0
        except LedgerDiverged as exc:
            self.divergence = exc.message
            log.critical("persister %s stopped: %s; the entries stay unacknowledged in the "
                         "stream", self.consumer, exc.message)
            try:
                self.redis.set(self.keys.divergence(), exc.message[:limits.divergence_text_max])
            except redis_errors.RedisError as report_exc:  # the log line above still stands
                log.error("persister: divergence not reported in Redis: %s", report_exc)
            raise
        self._ack(batch)
        self.written_count += written

    def _ack(self, batch: Batch) -> None:
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id, _ in batch.entries:
            by_stream.setdefault(stream, []).append(entry_id)
        pipe = self.redis.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
        pipe.execute()

    # -- the streams ------------------------------------------------------------------------------

    def _group_info(self, stream: str) -> dict[str, Any] | None:
        try:
            groups = self.redis.xinfo_groups(stream)
        except redis_errors.ResponseError:  # no such stream
            return None
        for info in groups:
            if info["name"] == self.group:
                return dict(info)
        return None

    def _all_acknowledged(self) -> bool:
        for stream in self.streams:
            info = self._group_info(stream)
            if info is None:
                if self.redis.xlen(stream):
                    return False
                continue
            if int(info["pending"]) or self._first_unread(stream, info) is not None:
                return False
        return True

    def _first_unread(self, stream: str, info: dict[str, Any]) -> str | None:
        after = info["last-delivered-id"]
        entries = self.redis.xrange(stream, min=f"({after}", count=1)
        return entries[0][0] if entries else None

    def trim(self) -> int:
        """Delete entries every group has acknowledged (below the oldest pending or unread)."""
        removed = 0
        for stream in self.streams:
            try:
                groups = self.redis.xinfo_groups(stream)
            except redis_errors.ResponseError:
                continue
            if not groups:
                continue  # nobody consumes this stream: keep everything
            floor: tuple[int, int] | None = None
            for info in groups:
                low = info["last-delivered-id"]
                if int(info["pending"]):
                    # None when the writer thread acknowledged them all since XINFO: then
                    # everything up to last-delivered-id (as read above) is acknowledged
                    low = self.redis.xpending(stream, info["name"])["min"] or low
                key = _id_key(low)
                floor = key if floor is None or key < floor else floor
            assert floor is not None
            if floor > (0, 0):
                removed += int(self.redis.xtrim(stream, minid=f"{floor[0]}-{floor[1]}",
                                                 approximate=False))
        return removed

    def lag(self) -> dict[str, Any]:
        """Per stream and in total: length, pending (read, not acknowledged), unread, and the
        age of the oldest event not yet persisted."""
        now_s, now_us = self.redis.time()
        now_ms = int(now_s) * 1000 + int(now_us) // 1000
        streams: dict[str, dict[str, Any]] = {}
        for stream in self.streams:
            length = int(self.redis.xlen(stream))
            info = self._group_info(stream)
            pending = int(info["pending"]) if info else 0
            oldest: str | None = None
            if info is None:
                first = self.redis.xrange(stream, count=1)
                oldest = first[0][0] if first else None
                unread = length
            else:
                if pending:
                    oldest = self.redis.xpending(stream, self.group)["min"]
                first_unread = self._first_unread(stream, info)
                if info.get("lag") is not None:
                    unread = int(info["lag"])
                else:
                    unread = len(self.redis.xrange(stream, min=f"({info['last-delivered-id']}",
                                                   count=self.batch_count_max))
                oldest = oldest or first_unread
            age_s = max(0, now_ms - _id_key(oldest)[0]) / 1000 if oldest else 0.0
            streams[stream] = {"stream_length": length, "pending": pending, "unread": unread,
                               "oldest_unpersisted_age_s": age_s}
        total = {
            "stream_length": sum(s["stream_length"] for s in streams.values()),
            "pending": sum(s["pending"] for s in streams.values()),
            "unread": sum(s["unread"] for s in streams.values()),
            "oldest_unpersisted_age_s": max(
                (s["oldest_unpersisted_age_s"] for s in streams.values()), default=0.0),
        }
        return {"streams": streams, "total": total}
