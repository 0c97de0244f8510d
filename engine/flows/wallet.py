"""The flows wired together on one engine: what the API and the tests use."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from engine import limits as engine_limits
from engine.engine import ReserveEngine
from engine.errors import ReserveError
from engine.flows import limits
from engine.flows.mobile_money import KIND as MM_KIND
from engine.flows.mobile_money import MobileMoney
from engine.flows.providers import MobileMoneyProvider, SimulatedProvider
from engine.flows.quotes import Quotes
from engine.flows.rates import PriceSource, StaticPriceSource
from engine.flows.store import FlowStore, call, decode
from engine.flows.swap import KIND as SWAP_KIND
from engine.flows.swap import Swaps
from engine.flows.users import Users

log = logging.getLogger("reserves.flows")


def callback_secret() -> bytes:
    return os.environ.get("RESERVES_MOBILE_MONEY_SECRET", "").encode()


def mobile_money_ttl_s() -> int:
    """How long a mobile-money hold waits for its callback (RESERVES_MOBILE_MONEY_TTL_S)."""
    raw = os.environ.get("RESERVES_MOBILE_MONEY_TTL_S", str(limits.mobile_money_hold_ttl_s))
    if not raw.isdigit() or not (
            engine_limits.hold_ttl_s_min <= int(raw) <= engine_limits.hold_ttl_s_max):
        raise ValueError(f"RESERVES_MOBILE_MONEY_TTL_S must be a whole number of seconds from "
                         f"{engine_limits.hold_ttl_s_min} to {engine_limits.hold_ttl_s_max}")
    return int(raw)


@dataclass(frozen=True, slots=True)
class RecoverResult:
    looked_at_count: int
    settled_count: int


class Wallet:
    def __init__(self, engine: ReserveEngine, prices: PriceSource | None = None,
                 provider: MobileMoneyProvider | None = None,
                 mobile_money_hold_ttl_s: int | None = None) -> None:
        self.engine = engine
        self.store = FlowStore(engine)
        self.prices = prices or StaticPriceSource.load()
        self.provider = provider or SimulatedProvider(callback_secret())
        self.users = Users(engine)
        self.quotes = Quotes(engine, self.store, self.prices)
        self.swaps = Swaps(engine, self.store, self.quotes)
        self.mobile_money = MobileMoney(engine, self.store, self.quotes, self.provider,
                                        mobile_money_hold_ttl_s or mobile_money_ttl_s())

    async def recover(self) -> RecoverResult:
        """One bounded pass: finish or undo every flow whose deadline passed (a crash, a
        callback that never came). Run it periodically, e.g. next to the sweeper.

        Each flow on its own: one that fails is put back with a backoff and never delays the
        others; a deterministic failure (a refusal, 4xx) or too many attempts end it
        compensated and flagged for an operator, with an alert."""
        due = await self.store.due(self.engine.ops.clock_ms())
        for kind, ref in due:
            try:
                await self._recover_one(kind, ref)
            except Exception as err:  # noqa: BLE001 (one flow's failure stays with that flow)
                try:
                    await self._failed(kind, ref, err)
                except Exception:  # noqa: BLE001 (e.g. Redis down: the next pass tries again)
                    log.exception("flow %s:%s: recording a failed recovery failed", kind, ref)
        return RecoverResult(len(due), len(due) - await self._still_due())

    async def _recover_one(self, kind: str, ref: str) -> None:
        if kind == SWAP_KIND:
            try:
                await self.swaps.recover(ref)
            except ReserveError:  # a failed swap raises its refusal: then it is settled
                if await self._is_open(kind, ref):
                    raise
        elif kind == MM_KIND:
            await self.mobile_money.recover(ref)
        else:
            raise ValueError(f"unknown flow kind {kind!r}")

    async def _is_open(self, kind: str, ref: str) -> bool:
        score = await self.engine.run(call("zscore", self.store.open_key, f"{kind}:{ref}"))
        return score is not None

    async def _failed(self, kind: str, ref: str, err: Exception) -> None:
        """A recovery attempt failed: back off, or (deterministic, or out of attempts) end the
        flow compensated and flag it."""
        status = getattr(err, "status_code", 500)
        record = await self.store.load(kind, ref)
        if not record:  # nothing left to finish or flag
            await self.store.mark_settled(kind, ref)
            return
        attempts = int(record.get("recover_attempts", "0")) + 1
        log.warning("flow %s:%s recovery attempt %d failed: %s", kind, ref, attempts, err)
        if status < 500 or attempts >= limits.recover_attempts_max:
            await self.abandon(kind, ref, err)
            return
        backoff_s = min(limits.recover_backoff_s_base * 2 ** (attempts - 1),
                        limits.recover_backoff_s_max)
        await self.store.update(kind, ref, recover_attempts=str(attempts))
        await self.store.postpone(kind, ref, self.engine.ops.clock_ms() + backoff_s * 1000)

    async def abandon(self, kind: str, ref: str, err: Exception) -> None:
        """End a flow that cannot go on: compensate what it did, flag it, raise an alert."""
        error = _error_body(err)
        try:
            if kind == SWAP_KIND:
                await self.swaps.abort(ref, error)
            elif kind == MM_KIND:
                await self.mobile_money.abort(ref, error)
        except Exception as again:  # noqa: BLE001 (the operator takes over from here)
            log.error("flow %s:%s could not be compensated: %s", kind, ref, again)
            error = {**error, "compensation_error": _error_body(again)}
        await self.flag(kind, ref, "recovery_failed", error)
        await self.store.mark_settled(kind, ref)

    async def flag(self, kind: str, ref: str, reason: str, error: dict[str, Any]) -> None:
        """Set a flow aside for an operator (GET /wallet/flows/flagged) and raise an alert."""
        await self.store.flag(kind, ref, reason, error)

    async def flagged(self) -> list[dict[str, Any]]:
        """The flagged flows, oldest first: what an operator must settle."""
        out: list[dict[str, Any]] = []
        for kind, ref in await self.store.flagged(limits.flagged_list_max):
            record = await self.store.load(kind, ref)
            if not record:
                continue
            out.append({"kind": kind, "reference_id": ref, "state": record.get("state"),
                        "flag": record.get("flag"),
                        "error": decode(record.get("flag_error")) or None,
                        "updated_ms": int(record.get("updated_ms", "0"))})
        return out

    async def _still_due(self) -> int:
        return len(await self.store.due(self.engine.ops.clock_ms()))


def _error_body(err: Exception) -> dict[str, Any]:
    if isinstance(err, ReserveError):
        return {"status": err.status_code, **err.to_dict()}
    return {"status": 500, "error": f"{type(err).__name__}: {err}", "code": "internal_error"}
