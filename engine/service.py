"""ReserveService: the synchronous facade with the seed's method names and dict results.

Successful calls return the seed's dicts (Decimal amounts); a refusal raises the typed error
from engine.errors, whose .to_dict() is the seed's error body
({"success": false, "error": ..., "reserve_status": ...}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from engine.commands import Op
from engine.config import Settings
from engine.connection import sync_client
from engine.drivers import SyncDriver
from engine.ops import Ops, wall_clock_ms
from engine.registry import CurrencyRegistry
from engine.types import Balance, HoldResult, SweepResult, TransferResult

T = TypeVar("T")


def hold_result_dict(result: HoldResult) -> dict[str, Any]:
    balance = result.balance
    return {
        "success": True,
        "reference_id": result.hold.reference_id,
        "reserved_amount": balance.major(result.hold.amount_minor),
        "available_balance": balance.major(balance.available_minor),
        "locked_balance": balance.major(balance.locked_minor),
        "status": balance.status,
        "hold_state": result.hold.state.value,
        "committed_amount": balance.major(result.hold.committed_minor),
        "released_amount": balance.major(result.hold.released_minor),
        "transaction_id": result.event_id or None,
    }


def transfer_dict(result: TransferResult, verb: str) -> dict[str, Any]:
    balance = result.balance
    return {
        "success": True,
        f"{verb}_amount": balance.major(result.amount_minor),
        "new_total_balance": balance.major(balance.total_minor),
        "transaction_id": result.transaction_id,
    }


class ReserveService:
    def __init__(
        self,
        client: Any = None,
        settings: Settings | None = None,
        registry: CurrencyRegistry | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.registry = registry or CurrencyRegistry.load(self.settings.currencies_path)
        self.client = client if client is not None else sync_client(self.settings)
        self.ops = Ops(self.settings, self.registry, clock_ms)
        self.driver = SyncDriver(self.client, wait_replicas=self.settings.wait_replicas,
                                 wait_timeout_ms=self.settings.wait_timeout_ms)

    def run(self, op: Op[T]) -> T:
        return self.driver.run(op)

    def get_reserve_account(self, currency: str, account_type: str | None = None) -> dict[str, Any]:
        account = self.run(self.ops.get_reserve_account(currency, account_type))
        return {
            "label": account.label,
            "currency": account.currency.code,
            "account_type": account.currency.account_type.value,
            "account_id": account.account_id,
            "account_number": account.account_number,
        }

    def get_reserve_balance(self, currency: str, account_type: str | None = None) -> dict[str, Any]:
        return self.run(self.ops.get_reserve_balance(currency, account_type)).to_dict()

    def get_all_reserves(self) -> list[Balance]:
        return self.run(self.ops.all_reserve_balances())

    def check_reserve_sufficiency(
        self, currency: str, amount: Any, account_type: str | None = None,
        operation_type: str = "check",
    ) -> dict[str, Any]:
        return self.run(
            self.ops.check_reserve_sufficiency(currency, amount, account_type, operation_type)
        )

    def reserve_amount(
        self, currency: str, amount: Any, account_type: str | None, reference_id: str,
        operation_type: str, ttl_s: int | None = None, metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return hold_result_dict(self.run(self.ops.reserve_amount(
            currency, amount, account_type, reference_id, operation_type, ttl_s, metadata)))

    def release_reserve(self, reference_id: str) -> dict[str, Any]:
        return hold_result_dict(self.run(self.ops.release(reference_id)))

    def commit_reserve(self, reference_id: str, amount: Any = None) -> dict[str, Any]:
        return hold_result_dict(self.run(self.ops.commit_reserve(reference_id, amount)))

    def get_hold(self, reference_id: str) -> dict[str, Any]:
        return self.run(self.ops.get_hold(reference_id)).to_dict()

    def top_up_reserve(
        self, currency: str, amount: Any, account_type: str | None, source_reference: str,
    ) -> dict[str, Any]:
        result = self.run(self.ops.top_up_reserve(currency, amount, account_type, source_reference))
        return transfer_dict(result, "topped_up")

    def withdraw_from_reserve(
        self, currency: str, amount: Any, account_type: str | None, destination_reference: str,
    ) -> dict[str, Any]:
        result = self.run(
            self.ops.withdraw_from_reserve(currency, amount, account_type, destination_reference)
        )
        return transfer_dict(result, "withdrawn")

    def sweep(self) -> SweepResult:
        return self.run(self.ops.sweep())

    def clear_cache(self) -> None:
        self.ops.clear_caches()
