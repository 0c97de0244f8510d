"""GET /wallet/reserves/analytics?period_days=N: the seed's "analytics" object, from the ledger.

Counts cover the money operations of reserve accounts (user accounts and audit events are left
out). total_volume is the money that moved: the sum of the amounts of the VOLUME_OPERATIONS, in
the currency's major units, exact (Decimal from integer minor units). A lock only earmarks money
and a release or an expiry hands the earmark back, so one hold counts once, by what it committed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from engine.errors import InvalidRequest
from engine.money import from_minor
from engine.registry import CurrencyRegistry
from persistence import limits
from persistence.store import Store, shared_engine

# The operations whose amount is money that moved: into a reserve (top-ups), out of it
# (withdrawals), spent from a hold (commits). Settlements belong here too: they are journalled as
# reserve_topup today; an operation name of their own is added to this set.
VOLUME_OPERATIONS = frozenset({"reserve_topup", "reserve_withdrawal", "reserve_commit"})


def check_period_days(period_days: Any) -> int:
    if isinstance(period_days, bool) or not isinstance(period_days, int):
        raise InvalidRequest("period_days must be a whole number of days")
    if not limits.period_days_min <= period_days <= limits.period_days_max:
        raise InvalidRequest(
            f"period_days must be from {limits.period_days_min} to {limits.period_days_max}"
        )
    return period_days


def reserve_analytics(
    database_url: str, period_days: int, registry: CurrencyRegistry,
    now: datetime | None = None,
) -> dict[str, Any]:
    period_days = check_period_days(period_days)
    since = (now or datetime.now(UTC)) - timedelta(days=period_days)
    rows = Store(database_url, shared_engine(database_url)).operation_totals(since)
    by_operation: dict[str, int] = {}
    by_currency: dict[str, dict[str, Any]] = {}
    volume_minor: dict[str, int] = {}
    for row in rows:
        count = int(row.n)
        by_operation[row.operation] = by_operation.get(row.operation, 0) + count
        entry = by_currency.setdefault(
            row.currency, {"total_volume": Decimal(0), "transaction_count": 0, "operations": {}})
        entry["transaction_count"] += count
        entry["operations"][row.operation] = count
        moved_minor = int(row.amount_minor) if row.operation in VOLUME_OPERATIONS else 0
        volume_minor[row.currency] = volume_minor.get(row.currency, 0) + moved_minor
    for code, entry in by_currency.items():
        entry["total_volume"] = from_minor(volume_minor[code], registry.get(code).decimals)
    return {
        "period_days": period_days,
        "total_transactions": sum(by_operation.values()),
        "by_operation": by_operation,
        "by_currency": by_currency,
    }
