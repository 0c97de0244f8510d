"""Helpers of the flow tests: a wallet on the test's backend with a hand-moved clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.engine import ReserveEngine
from engine.flows.providers import SimulatedProvider
from engine.flows.rates import StaticPriceSource
from engine.flows.wallet import Wallet
from engine.journal import JournalEvent
from persistence.store import ALERT_OPERATIONS
from tests.engine_helpers import Clock

SECRET = b"test-secret"


@dataclass
class Rig:
    wallet: Wallet
    engine: ReserveEngine
    provider: SimulatedProvider
    clock: Clock
    backend: dict[str, Any]

    async def minor(self, label: str) -> tuple[int, int]:
        """(total_minor, locked_minor) of an account by label."""
        spec = self.engine.ops.spec_of_label(label)
        balance = await self.engine.run(self.engine.ops.balance(spec))
        return balance.total_minor, balance.locked_minor

    async def seed_reserve(self, currency: str, amount: str) -> None:
        await self.engine.top_up_reserve(currency, amount, None, f"seed_{currency}_{amount}")

    async def deposit(self, user: str, currency: str, amount: str) -> None:
        await self.wallet.users.deposit(user, currency, amount, f"dep_{user}_{currency}_{amount}")

    def journal(self) -> list[JournalEvent]:
        client = self.backend["sync"]
        return [JournalEvent.parse(i, f) for s in self.engine.ops.keys.streams()
                for i, f in client.xrange(s)]

    def money_events(self) -> list[JournalEvent]:
        return [e for e in self.journal()
                if e.op not in ("audit", "account_open", *ALERT_OPERATIONS)]

    async def currency_sum(self, currency: str) -> tuple[int, int]:
        """Sum of total and of locked over every account of one currency."""
        labels = await self.engine.run(self.engine.ops.list_labels())
        specs = [self.engine.ops.spec_of_label(label) for label in labels]
        specs = [s for s in specs if s.currency.code == currency]
        balances = await self.engine.run(self.engine.ops.balances(specs))
        return sum(b.total_minor for b in balances), sum(b.locked_minor for b in balances)


def make_rig(backend: dict[str, Any], client: Any, **provider_args: Any) -> Rig:
    clock = Clock()
    engine = ReserveEngine(client, backend["settings"], clock_ms=clock)
    provider = SimulatedProvider(SECRET, clock_ms=clock, **provider_args)
    wallet = Wallet(engine, StaticPriceSource.load(), provider)
    return Rig(wallet, engine, provider, clock, backend)
