"""Liquidity providers: the interface, timestamped HMAC-signed callbacks, and a simulator.

A provider is asked for funds for a reserve (`request_liquidity`); it dedups on our reference,
so asking again after a failure is safe. It answers later by a callback: JSON
{"provider_tx_id", "reference_id", "status": "success"|"failed"} signed with HMAC-SHA256 over
"<timestamp>." followed by the raw body, hex in `X-Signature`, the timestamp (Unix seconds) in
`X-Timestamp`. The timestamp must be within limits.callback_window_s of our clock, so a
captured callback cannot be replayed later. Shared secret: RESERVES_LIQUIDITY_SECRET.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from engine.flows.errors import BadSignature, ProviderError
from engine.liquidity import limits

SIGNATURE_HEADER = "x-signature"
TIMESTAMP_HEADER = "x-timestamp"
STATUSES = ("success", "failed")


def callback_secret() -> bytes:
    return os.environ.get("RESERVES_LIQUIDITY_SECRET", "").encode()


@dataclass(frozen=True, slots=True)
class LiquidityRequest:
    reference_id: str  # ours, deterministic: the provider dedups on it
    account: str  # RESERVE_<CUR>_<TYPE>
    currency: str
    account_type: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class LiquidityCallback:
    provider_tx_id: str
    reference_id: str
    status: str  # success | failed
    timestamp_s: int


class LiquidityProvider(Protocol):
    name: str

    async def request_liquidity(self, request: LiquidityRequest) -> str:
        """Ask for the funds; returns the provider's transaction id. Raises ProviderError."""
        ...

    def verify_callback(self, body: bytes, headers: Mapping[str, str],
                        now_ms: int) -> LiquidityCallback: ...


def sign(secret: bytes, timestamp_s: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp_s).encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signed(secret: bytes, body: bytes, headers: Mapping[str, str],
                  now_ms: int, window_s: int = limits.callback_window_s) -> LiquidityCallback:
    """Check the signature and the timestamp, then parse; any defect is BadSignature (401)."""
    if not secret:
        raise BadSignature("Liquidity callbacks are not configured (no shared secret)",
                           code="callback_secret_missing")
    lower = {k.lower(): v for k, v in headers.items()}
    given = lower.get(SIGNATURE_HEADER, "")
    raw_ts = lower.get(TIMESTAMP_HEADER, "")
    if not raw_ts.isdigit() or len(raw_ts) > 12:
        raise BadSignature("Missing or malformed X-Timestamp", code="bad_timestamp")
    timestamp_s = int(raw_ts)
    if len(body) > limits.callback_bytes_max or not hmac.compare_digest(
            given.encode(), sign(secret, timestamp_s, body).encode()):
        raise BadSignature("Invalid callback signature", code="bad_signature")
    if abs(now_ms - timestamp_s * 1000) > window_s * 1000:
        raise BadSignature(f"Callback timestamp is more than {window_s} s from our clock",
                           code="stale_callback")
    try:
        data = json.loads(body)
        callback = LiquidityCallback(str(data["provider_tx_id"]), str(data["reference_id"]),
                                     str(data["status"]), timestamp_s)
    except (ValueError, KeyError, TypeError):
        raise BadSignature("Malformed callback body", code="bad_callback") from None
    if callback.status not in STATUSES:
        raise BadSignature(f"Unknown callback status {callback.status!r}", code="bad_callback")
    return callback


def signed_callback(secret: bytes, tx_id: str, reference_id: str, status: str,
                    timestamp_s: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"provider_tx_id": tx_id, "reference_id": reference_id, "status": status},
                      separators=(",", ":")).encode()
    return body, {"X-Signature": sign(secret, timestamp_s, body),
                  "X-Timestamp": str(timestamp_s)}


CallbackSink = Callable[[bytes, dict[str, str]], Awaitable[Any]]


class SimulatedLiquidityProvider:
    """A provider for development and tests.

    outcome: "manual" (no callback of its own: send one with `signed_callback`), "success" or
    "failed" (it calls back through `sink` after delay_s). failures_left: the next this many
    calls raise ProviderError (a provider that is down); fail_always: every call does.
    """

    name = "simulated"

    def __init__(self, secret: bytes, *, outcome: str = "manual", delay_s: float = 0.0,
                 sink: CallbackSink | None = None,
                 clock_s: Callable[[], int] | None = None) -> None:
        self.secret = secret
        self.outcome = outcome
        self.delay_s = delay_s
        self.sink = sink
        self.clock_s = clock_s or (lambda: int(time.time()))
        self.failures_left = 0
        self.fail_always = False
        self.calls: list[LiquidityRequest] = []
        self.transactions: dict[str, LiquidityRequest] = {}
        self._by_reference: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def request_liquidity(self, request: LiquidityRequest) -> str:
        self.calls.append(request)
        if self.fail_always or self.failures_left > 0:
            self.failures_left = max(0, self.failures_left - 1)
            raise ProviderError(f"Liquidity provider unavailable for {request.reference_id}",
                                code="provider_unavailable")
        known = self._by_reference.get(request.reference_id)
        if known is not None:  # the same request again: the same transaction
            return known
        tx_id = f"liq-{uuid.uuid4().hex}"
        self.transactions[tx_id] = request
        self._by_reference[request.reference_id] = tx_id
        if self.outcome in STATUSES and self.sink is not None:
            if len(self._tasks) >= limits.simulated_callbacks_in_flight_max:
                raise ProviderError("Simulated liquidity provider is saturated",
                                    code="provider_busy")
            task = asyncio.get_running_loop().create_task(self._deliver(tx_id, self.outcome))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return tx_id

    def verify_callback(self, body: bytes, headers: Mapping[str, str],
                        now_ms: int) -> LiquidityCallback:
        return verify_signed(self.secret, body, headers, now_ms)

    def signed_callback(self, tx_id: str, status: str,
                        timestamp_s: int | None = None) -> tuple[bytes, dict[str, str]]:
        request = self.transactions[tx_id]
        ts = self.clock_s() if timestamp_s is None else timestamp_s
        return signed_callback(self.secret, tx_id, request.reference_id, status, ts)

    async def _deliver(self, tx_id: str, status: str) -> None:
        await asyncio.sleep(self.delay_s)
        body, headers = self.signed_callback(tx_id, status)
        assert self.sink is not None
        await self.sink(body, headers)

    async def settle(self) -> None:
        """Wait for the scheduled callbacks (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
