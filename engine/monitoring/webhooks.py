"""Alert webhooks: one bounded queue per URL, each drained by its own background asyncio task,
so one receiver sees its payloads in the order they were raised (a retried "raised" is never
overtaken by its "cleared"), and a slow receiver does not hold up the others. The caller only
ever does a put_nowait (a full queue drops the payload and counts it), so delivery never blocks
the hot path. Each POST carries the JSON body signed with HMAC-SHA256 of the shared secret:

    X-Reserves-Signature: sha256=<hex digest of the exact body bytes>

A failed attempt (connection error, timeout, 429 or 5xx) is retried with exponential backoff
up to webhook_attempts_max attempts; any other 4xx is final.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from engine.monitoring import limits, metrics

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Reserves-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    return hmac.compare_digest(sign(secret, body), header)


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Delay after failed attempt number `attempt` (1-based): base, 2*base, 4*base, ... <= max."""
    return float(min(max_s, base_s * (2 ** (attempt - 1))))


@dataclass
class Delivery:
    url: str
    body: bytes
    attempts: int = 0


class WebhookSender:
    def __init__(
        self,
        urls: Sequence[str],
        secret: str,
        queue_count_max: int = limits.webhook_queue_count_max,
        attempts_max: int = limits.webhook_attempts_max,
        backoff_s_base: float = limits.webhook_backoff_s_base,
        backoff_s_max: float = limits.webhook_backoff_s_max,
        timeout_s: float = limits.webhook_timeout_s,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        assert attempts_max >= 1
        self.urls = tuple(urls)
        self.secret = secret
        self.attempts_max = attempts_max
        self.backoff_s_base = backoff_s_base
        self.backoff_s_max = backoff_s_max
        self.timeout_s = timeout_s
        self.sleep = sleep
        self.queues: dict[str, asyncio.Queue[Delivery]] = {
            url: asyncio.Queue(maxsize=queue_count_max) for url in self.urls}
        self.dropped_count = 0
        self.delivered_count = 0
        self.failed_count = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    def submit(self, payload: dict[str, Any]) -> None:
        """Queue one payload for every URL; never waits."""
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()
        for url, queue in self.queues.items():
            try:
                queue.put_nowait(Delivery(url, body))
            except asyncio.QueueFull:
                self.dropped_count += 1
                metrics.webhook_deliveries.labels("dropped").inc()
                log.warning("alert webhook queue full: dropped a payload for %s", url)
        metrics.webhook_queue.set(self.queued_count())

    def queued_count(self) -> int:
        return sum(queue.qsize() for queue in self.queues.values())

    def start(self) -> None:
        if self._tasks or not self.urls:
            return
        self._client = httpx.AsyncClient(timeout=self.timeout_s)
        self._tasks = [asyncio.create_task(self._worker(queue), name=f"alert-webhook-{i}")
                       for i, queue in enumerate(self.queues.values())]

    async def join(self) -> None:
        """Wait until every queued payload is delivered or given up (tests, shutdown)."""
        await asyncio.gather(*(queue.join() for queue in self.queues.values()))

    async def stop(self, deadline_s: float = limits.webhook_timeout_s) -> None:
        if self._tasks:
            try:
                await asyncio.wait_for(self.join(), deadline_s)
            except TimeoutError:
                log.warning("alert webhooks: %d payloads left undelivered", self.queued_count())
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _worker(self, queue: asyncio.Queue[Delivery]) -> None:
        while True:
            delivery = await queue.get()
            try:
                await self._deliver(delivery)
            except Exception:  # a bug here must not kill the worker
                log.exception("alert webhook delivery to %s crashed", delivery.url)
            finally:
                queue.task_done()
                metrics.webhook_queue.set(self.queued_count())

    async def _deliver(self, delivery: Delivery) -> None:
        assert self._client is not None
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: sign(self.secret, delivery.body)}
        while delivery.attempts < self.attempts_max:
            delivery.attempts += 1
            metrics.webhook_attempts.inc()
            try:
                response = await self._client.post(delivery.url, content=delivery.body,
                                                   headers=headers)
            except httpx.HTTPError as exc:
                outcome = f"{type(exc).__name__}"
            else:
                if response.status_code < 300:
                    self.delivered_count += 1
                    metrics.webhook_deliveries.labels("delivered").inc()
                    return
                outcome = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break
            if delivery.attempts < self.attempts_max:
                await self.sleep(backoff_s(delivery.attempts, self.backoff_s_base,
                                           self.backoff_s_max))
        self.failed_count += 1
        metrics.webhook_deliveries.labels("failed").inc()
        log.warning("alert webhook %s failed after %d attempts (%s)", delivery.url,
                    delivery.attempts, outcome)
