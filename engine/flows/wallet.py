"""The flows wired together on one engine: what the API and the tests use."""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine import limits as engine_limits
from engine.engine import ReserveEngine
from engine.flows import limits
from engine.flows.mobile_money import KIND as MM_KIND
from engine.flows.mobile_money import MobileMoney
from engine.flows.providers import MobileMoneyProvider, SimulatedProvider
from engine.flows.quotes import Quotes
from engine.flows.rates import PriceSource, StaticPriceSource
from engine.flows.store import FlowStore
from engine.flows.swap import KIND as SWAP_KIND
from engine.flows.swap import Swaps
from engine.flows.users import Users


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
        callback that never came). Run it periodically, e.g. next to the sweeper."""
        due = await self.store.due(self.engine.ops.clock_ms())
        for kind, ref in due:
            if kind == SWAP_KIND:
                try:
                    await self.swaps.recover(ref)
                except Exception as err:  # a failed swap raises its refusal: it is settled
                    if getattr(err, "status_code", 500) >= 500:
                        raise
            elif kind == MM_KIND:
                await self.mobile_money.recover(ref)
        return RecoverResult(len(due), len(due) - await self._still_due())

    async def _still_due(self) -> int:
        return len(await self.store.due(self.engine.ops.clock_ms()))
