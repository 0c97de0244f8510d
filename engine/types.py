"""Shared value types of the engine. Amounts are integer minor units (`*_minor`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from engine.money import from_minor, reserve_status, utilization_percent
from engine.registry import Currency


class HoldState(StrEnum):
    pending = "pending"
    committed = "committed"
    released = "released"
    expired = "expired"


HOLD_STATES: dict[str, HoldState] = {state.value: state for state in HoldState}


class AccountKind(StrEnum):
    reserve = "reserve"
    user = "user"


@dataclass(frozen=True, slots=True)
class Account:
    label: str
    currency: Currency
    kind: AccountKind
    account_id: int
    account_number: str
    created_ms: int


# Balance, Hold and HoldResult are built for every operation: plain slotted dataclasses, since
# a frozen one's __init__ (object.__setattr__ per field) costs about 7x. Treat them as values.
@dataclass(slots=True)
class Balance:
    account: Account
    total_minor: int
    locked_minor: int

    def __post_init__(self) -> None:
        assert self.total_minor >= self.locked_minor, (self.account.label, self.total_minor, self.locked_minor)
        assert self.locked_minor >= 0, (self.account.label, self.locked_minor)

    @property
    def available_minor(self) -> int:
        return self.total_minor - self.locked_minor

    def major(self, amount_minor: int) -> Decimal:
        return from_minor(amount_minor, self.account.currency.decimals)

    @property
    def utilization_percentage(self) -> Decimal:
        return utilization_percent(self.locked_minor, self.total_minor)

    @property
    def status(self) -> str:
        return reserve_status(self.locked_minor, self.total_minor)

    def to_dict(self) -> dict[str, Any]:
        """The seed's reserve shape (Decimal amounts)."""
        return {
            "currency": self.account.currency.code,
            "account_type": self.account.currency.account_type.value,
            "total_balance": self.major(self.total_minor),
            "available_balance": self.major(self.available_minor),
            "locked_balance": self.major(self.locked_minor),
            "utilization_percentage": self.utilization_percentage,
            "status": self.status,
            "account_id": self.account.account_id,
            "account_number": self.account.account_number,
        }

    def sufficiency(self, required_minor: int) -> dict[str, Any]:
        """The seed's reserve_status block for a required amount."""
        return {
            "is_sufficient": required_minor <= self.available_minor,
            "required_amount": self.major(required_minor),
            "available_amount": self.major(self.available_minor),
            "utilization_percentage": self.utilization_percentage,
            "status": self.status,
        }


@dataclass(slots=True)
class Hold:
    reference_id: str
    account: Account
    state: HoldState
    amount_minor: int
    committed_minor: int
    created_ms: int
    expires_ms: int  # 0: no TTL
    ended_ms: int  # 0: pending
    operation_type: str

    @property
    def released_minor(self) -> int:
        return 0 if self.state is HoldState.pending else self.amount_minor - self.committed_minor

    def to_dict(self) -> dict[str, Any]:
        decimals = self.account.currency.decimals
        return {
            "reference_id": self.reference_id,
            "account": self.account.label,
            "currency": self.account.currency.code,
            "account_type": self.account.currency.account_type.value,
            "state": self.state.value,
            "amount": from_minor(self.amount_minor, decimals),
            "committed_amount": from_minor(self.committed_minor, decimals),
            "released_amount": from_minor(self.released_minor, decimals),
            "operation_type": self.operation_type,
            "created_at_ms": self.created_ms,
            "expires_at_ms": self.expires_ms or None,
            "ended_at_ms": self.ended_ms or None,
        }


@dataclass(slots=True)
class HoldResult:
    """A hold after a reserve / release / commit call, and the account's balance after it."""

    hold: Hold
    balance: Balance
    applied: bool  # False: an idempotent repeat, nothing changed
    event_id: int  # 0 when nothing was journalled


@dataclass(frozen=True, slots=True)
class TransferResult:
    """A top-up or withdrawal, and the balance after it."""

    reference: str
    amount_minor: int
    balance: Balance
    applied: bool
    transaction_id: int | None  # None: a repeat, nothing journalled


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg of reserve_many: an account (by label) and an amount."""

    label: str
    amount_minor: int
    reference_id: str


@dataclass(frozen=True, slots=True)
class SweepResult:
    expired_count: int = 0
    pruned_count: int = 0
    accounts_count: int = 0
    errors: list[str] = field(default_factory=list)
