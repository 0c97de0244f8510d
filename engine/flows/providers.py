"""Mobile-money providers: the interface, HMAC-signed callbacks, and a simulated provider.

A callback is JSON {"provider_tx_id", "reference_id", "status": "success"|"failed",
"timestamp_ms"} signed with HMAC-SHA256 over the raw body, hex in the `X-Signature` header
(shared secret from RESERVES_MOBILE_MONEY_SECRET). The signed timestamp (milliseconds since the
epoch, when the provider sent it) bounds a replay to limits.callback_age_s_max; the transaction
id binds it to the one operation that recorded that transaction when it initiated.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from engine.flows import limits
from engine.errors import ReserveError
from engine.flows.errors import BadSignature, ProviderError
from engine.ops import wall_clock_ms

SIGNATURE_HEADER = "x-signature"
STATUSES = ("success", "failed")


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    kind: str  # collection | payout
    reference_id: str  # ours: the provider dedups on it
    phone_number: str
    currency: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Callback:
    provider_tx_id: str
    reference_id: str
    status: str  # success | failed
    sent_ms: int  # the signed timestamp


class MobileMoneyProvider(Protocol):
    async def initiate_collection(self, request: ProviderRequest) -> str: ...

    async def initiate_payout(self, request: ProviderRequest) -> str: ...

    def verify_callback(self, body: bytes, headers: Mapping[str, str]) -> Callback: ...


def sign(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signed(secret: bytes, body: bytes, headers: Mapping[str, str]) -> Callback:
    """Check the signature, then parse; any defect is BadSignature (changes nothing)."""
    if not secret:
        raise BadSignature("Mobile-money callbacks are not configured (no shared secret)",
                           code="callback_secret_missing")
    given = {k.lower(): v for k, v in headers.items()}.get(SIGNATURE_HEADER, "")
    if len(body) > limits.callback_bytes_max or not hmac.compare_digest(
            given.encode(), sign(secret, body).encode()):
        raise BadSignature("Invalid callback signature", code="bad_signature")
    try:
        data = json.loads(body)
        sent_ms = data["timestamp_ms"]
        if type(sent_ms) is not int:  # noqa: E721 (a bool is not a timestamp)
            raise TypeError("timestamp_ms")
        callback = Callback(str(data["provider_tx_id"]), str(data["reference_id"]),
                            str(data["status"]), sent_ms)
    except (ValueError, KeyError, TypeError):
        raise BadSignature("Malformed callback body (provider_tx_id, reference_id, status and "
                           "an integer timestamp_ms)", code="bad_callback") from None
    if callback.status not in STATUSES:
        raise BadSignature(f"Unknown callback status {callback.status!r}", code="bad_callback")
    return callback


CallbackSink = Callable[[bytes, dict[str, str]], Awaitable[Any]]


class SimulatedProvider:
    """A provider for development and tests: completes or fails after a delay.

    outcome: "success" | "failed" | "manual" (no callback: the test sends one with
    `signed_callback`), or a function of the request. With a sink set, the callback is delivered
    to it after delay_s (again, up to delivery_attempts_max times, while the sink answers 409
    callback_too_early, as a real provider retries); fail_initiation (all) or refuse (a function
    of the request) makes the initiate calls raise ProviderError. clock_ms stamps the callbacks.
    """

    def __init__(self, secret: bytes, *, outcome: str | Callable[[ProviderRequest], str] = "manual",
                 delay_s: float = 0.0, sink: CallbackSink | None = None,
                 refuse: Callable[[ProviderRequest], bool] | None = None,
                 clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.secret = secret
        self.clock_ms = clock_ms
        self.outcome = outcome
        self.delay_s = delay_s
        self.sink = sink
        self.refuse = refuse
        self.fail_initiation = False
        self.transactions: dict[str, ProviderRequest] = {}
        self._by_reference: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def initiate_collection(self, request: ProviderRequest) -> str:
        return self._initiate(request)

    async def initiate_payout(self, request: ProviderRequest) -> str:
        return self._initiate(request)

    def verify_callback(self, body: bytes, headers: Mapping[str, str]) -> Callback:
        return verify_signed(self.secret, body, headers)

    def _initiate(self, request: ProviderRequest) -> str:
        if self.fail_initiation or (self.refuse is not None and self.refuse(request)):
            raise ProviderError(f"Provider refused {request.kind} {request.reference_id}",
                                code="provider_refused")
        known = self._by_reference.get(request.reference_id)
        if known is not None:  # a retry of the same request: the same transaction
            return known
        tx_id = f"sim-{uuid.uuid4().hex}"
        self.transactions[tx_id] = request
        self._by_reference[request.reference_id] = tx_id
        outcome = self.outcome(request) if callable(self.outcome) else self.outcome
        if outcome in ("success", "failed") and self.sink is not None:
            if len(self._tasks) >= limits.simulated_callbacks_in_flight_max:
                raise ProviderError("Simulated provider is saturated", code="provider_busy")
            task = asyncio.get_running_loop().create_task(self._deliver(tx_id, outcome))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return tx_id

    async def _deliver(self, tx_id: str, status: str) -> None:
        await asyncio.sleep(self.delay_s)
        assert self.sink is not None
        for _ in range(limits.simulated_delivery_attempts_max):
            body, headers = self.signed_callback(tx_id, status)
            try:
                await self.sink(body, headers)
                return
            except ReserveError as err:
                if err.details.get("code") != "callback_too_early":
                    raise
            await asyncio.sleep(limits.simulated_redelivery_s)

    def signed_callback(self, tx_id: str, status: str,
                        sent_ms: int | None = None) -> tuple[bytes, dict[str, str]]:
        request = self.transactions[tx_id]
        body = json.dumps({"provider_tx_id": tx_id, "reference_id": request.reference_id,
                           "status": status,
                           "timestamp_ms": self.clock_ms() if sent_ms is None else sent_ms},
                          separators=(",", ":")).encode()
        return body, {"X-Signature": sign(self.secret, body)}

    async def settle(self) -> None:
        """Wait for the scheduled callbacks (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
