"""ReserveEngine: the asyncio engine for the hot path (the API, the flows, the benchmarks)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from engine import limits
from engine.batching import BatchingDriver
from engine.commands import Op
from engine.config import Settings
from engine.connection import async_client
from engine.drivers import AsyncDriver
from engine.ops import AccountSpec, Ops, wall_clock_ms
from engine.registry import CurrencyRegistry
from engine.saga import recover_sagas
from engine.types import Account, Balance, Hold, HoldResult, SweepResult, TransferResult

T = TypeVar("T")


class ReserveEngine:
    def __init__(
        self,
        client: Any,
        settings: Settings | None = None,
        registry: CurrencyRegistry | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        batching: bool | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.registry = registry or CurrencyRegistry.load(self.settings.currencies_path)
        self.client = client
        self.ops = Ops(self.settings, self.registry, clock_ms)
        # batching None: as the settings say (RESERVES_BATCHING, on by default)
        if batching is None:
            batching = self.settings.batching
        driver_type = BatchingDriver if batching else AsyncDriver
        self.driver: AsyncDriver = driver_type(client, wait_replicas=self.settings.wait_replicas,
                                               wait_timeout_ms=self.settings.wait_timeout_ms)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> ReserveEngine:
        settings = settings or Settings.from_env()
        return cls(async_client(settings), settings, **kwargs)

    def run(self, op: Op[T]) -> Coroutine[Any, Any, T]:
        """Run an operation of engine/ops.py (the driver's coroutine itself: one frame less)."""
        return self.driver.run(op)

    async def close(self) -> None:
        await self.client.aclose()

    # The seed's ReserveService API, async and typed.

    async def get_reserve_account(self, currency: str, account_type: str | None = None) -> Account:
        return await self.run(self.ops.get_reserve_account(currency, account_type))

    async def get_reserve_balance(self, currency: str, account_type: str | None = None) -> Balance:
        return await self.run(self.ops.get_reserve_balance(currency, account_type))

    async def all_reserve_balances(self) -> list[Balance]:
        return await self.run(self.ops.all_reserve_balances())

    async def check_reserve_sufficiency(
        self, currency: str, amount: Any, account_type: str | None = None,
        operation_type: str = "check",
    ) -> dict[str, Any]:
        return await self.run(
            self.ops.check_reserve_sufficiency(currency, amount, account_type, operation_type)
        )

    async def reserve_amount(
        self, currency: str, amount: Any, account_type: str | None, reference_id: str,
        operation_type: str, ttl_s: int | None = None, metadata: dict[str, Any] | None = None,
    ) -> HoldResult:
        return await self.run(self.ops.reserve_amount(
            currency, amount, account_type, reference_id, operation_type, ttl_s, metadata))

    async def reserve_many(
        self, legs: Sequence[tuple[AccountSpec, int, str]], operation_type: str,
        ttl_s: int | None = None, metadata: dict[str, Any] | None = None,
    ) -> list[HoldResult]:
        return await self.run(self.ops.reserve_many(legs, operation_type, ttl_s, metadata))

    async def release_reserve(
        self, reference_id: str, metadata: dict[str, Any] | None = None
    ) -> HoldResult:
        return await self.run(self.ops.release(reference_id, metadata))

    async def commit_reserve(
        self, reference_id: str, amount: Any = None, metadata: dict[str, Any] | None = None
    ) -> HoldResult:
        if amount is None:  # the whole hold: no amount to convert, one generator less
            return await self.run(self.ops.commit(reference_id, None, metadata))
        return await self.run(self.ops.commit_reserve(reference_id, amount, metadata))

    async def get_hold(self, reference_id: str) -> Hold:
        return await self.run(self.ops.get_hold(reference_id))

    async def top_up_reserve(
        self, currency: str, amount: Any, account_type: str | None, source_reference: str,
        metadata: dict[str, Any] | None = None,
    ) -> TransferResult:
        return await self.run(self.ops.top_up_reserve(
            currency, amount, account_type, source_reference, metadata))

    async def withdraw_from_reserve(
        self, currency: str, amount: Any, account_type: str | None, destination_reference: str,
        metadata: dict[str, Any] | None = None,
    ) -> TransferResult:
        return await self.run(self.ops.withdraw_from_reserve(
            currency, amount, account_type, destination_reference, metadata))

    async def sweep(self) -> SweepResult:
        return await self.run(self.ops.sweep())

    async def recover_sagas(self, older_than_s: float = limits.saga_stale_s) -> int:
        """Undo cross-slot sagas (Redis Cluster) that a crashed caller left half-way."""
        return await self.run(recover_sagas(self.ops, older_than_s))

    def clear_caches(self) -> None:
        self.ops.clear_caches()
