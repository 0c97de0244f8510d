"""The design document's ReserveService, as its code calls it: dicts in and out, never raising.

    from engine.compat import AccountType, ReserveService

    reserve_service = ReserveService(session)          # the session is accepted, not needed
    check = reserve_service.check_reserve_sufficiency("USDT", 1000.0, AccountType.CRYPTO, "swap")
    if not check["is_sufficient"]: ...
    result = reserve_service.reserve_amount("USDT", 1000.0, AccountType.CRYPTO, "ref_from", "swap")
    if not result["success"]: result["error"], result.get("reserve_status")

What differs from engine.service.ReserveService (typed, raising; keep it for new code):
- `AccountType.CRYPTO` / `AccountType.FIAT`, the document's names.
- A float amount is read by its shortest decimal text (`repr`: 1000.0 -> Decimal("1000.0"),
  0.1 -> Decimal("0.1")), never by its binary value; more decimals than the currency has are
  refused like any other amount.
- A refusal is returned as the document's error dict, {"success": False, "error": ..., "code":
  ...}, with "reserve_status" when the reserve is short; a refused check also says
  "is_sufficient": False, so `check["is_sufficient"]` always answers.
- The document's attributes: session, reserve_accounts (accounts by label), reserve_cache
  (balances read by get_reserve_balance, served for cache_ttl = 30 s and dropped on every change
  made through this object) and cache_ttl. Checks and holds always read Redis: the cache is
  never used to decide.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from decimal import Decimal
from enum import StrEnum
from typing import Any

from engine import service
from engine.errors import InvalidRequest, ReserveError
from engine.registry import AccountType as RegistryAccountType

CACHE_TTL_S = 30  # the document's balance cache TTL
_SEVERITY = ("healthy", "moderate", "warning", "critical")


class AccountType(StrEnum):
    """The document's account types (the engine's registry spells them crypto / fiat)."""

    CRYPTO = RegistryAccountType.crypto.value
    FIAT = RegistryAccountType.fiat.value


def exact_amount(amount: Any) -> Any:
    """A float as the decimal it was written as (its shortest repr); anything else unchanged,
    for the engine to check."""
    if isinstance(amount, float):
        if not math.isfinite(amount):
            raise InvalidRequest("amount must be a finite number", code="invalid_amount")
        return Decimal(repr(amount))
    return amount


def _kind(account_type: Any) -> str | None:
    return None if account_type is None else str(account_type)


class ReserveService:
    def __init__(self, session: Any = None, *, client: Any = None, settings: Any = None,
                 registry: Any = None, clock_ms: Callable[[], int] | None = None,
                 monotonic_s: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.reserve_accounts: dict[str, dict[str, Any]] = {}
        self.reserve_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self.cache_ttl = CACHE_TTL_S
        kwargs: dict[str, Any] = {} if clock_ms is None else {"clock_ms": clock_ms}
        self.engine = service.ReserveService(client, settings, registry, **kwargs)
        self._monotonic_s = monotonic_s

    # -- reading ------------------------------------------------------------------------------

    def get_reserve_account(self, currency: str, account_type: Any = None) -> dict[str, Any]:
        """The reserve's account (opened on first use), e.g. label RESERVE_USDT_CRYPTO."""
        def call() -> dict[str, Any]:
            account = self.engine.get_reserve_account(currency, _kind(account_type))
            self.reserve_accounts[account["label"]] = account
            return {"success": True, **account}
        return self._answer(call)

    def get_reserve_balance(self, currency: str, account_type: Any = None) -> dict[str, Any]:
        """The document's reserve object (total, available, locked, utilization, status)."""
        def call() -> dict[str, Any]:
            key = self._cache_key(currency, account_type)
            cached = self.reserve_cache.get(key)
            now_s = self._monotonic_s()
            if cached is not None and now_s - cached[0] < self.cache_ttl:
                return dict(cached[1])
            body = {"success": True, **self.engine.get_reserve_balance(currency,
                                                                       _kind(account_type))}
            self.reserve_cache[key] = (now_s, body)
            return dict(body)
        return self._answer(call)

    def get_all_reserves_status(self) -> dict[str, Any]:
        """The document's GET /wallet/reserves/status body."""
        def call() -> dict[str, Any]:
            groups: dict[str, Any] = {kind.value: {} for kind in AccountType}
            worst, critical, warning = "healthy", [], []
            for balance in self.engine.get_all_reserves():
                reserve = balance.to_dict()
                groups.setdefault(reserve["account_type"], {})[reserve["currency"]] = reserve
                if reserve["status"] == "critical":
                    critical.append(reserve["currency"])
                elif reserve["status"] == "warning":
                    warning.append(reserve["currency"])
                if _SEVERITY.index(reserve["status"]) > _SEVERITY.index(worst):
                    worst = reserve["status"]
            summary = {"overall_status": worst, "critical_reserves": critical,
                       "warning_reserves": warning}
            return {"success": True, "reserves": {**groups, "summary": summary}}
        return self._answer(call)

    def check_reserve_sufficiency(self, currency: str, amount: Any, account_type: Any = None,
                                  operation_type: str = "check") -> dict[str, Any]:
        """The document's reserve_status block; a refused check also says is_sufficient False."""
        def call() -> dict[str, Any]:
            status = self.engine.check_reserve_sufficiency(
                currency, exact_amount(amount), _kind(account_type), operation_type)
            return {"success": True, **status}
        answer = self._answer(call)
        answer.setdefault("is_sufficient", False)
        return answer

    def get_hold(self, reference_id: str) -> dict[str, Any]:
        return self._answer(lambda: {"success": True, "hold": self.engine.get_hold(reference_id)})

    def get_reserve_analytics(self, period_days: int = 30) -> dict[str, Any]:
        """The document's analytics object, from the database (RESERVES_DATABASE_URL)."""
        def call() -> dict[str, Any]:
            from persistence.analytics import reserve_analytics  # the ledger: only here

            data = reserve_analytics(self.engine.settings.database_url, period_days,
                                     self.engine.registry)
            return {"success": True, "analytics": data}
        return self._answer(call)

    # -- changing -----------------------------------------------------------------------------

    def reserve_amount(self, currency: str, amount: Any, account_type: Any, reference_id: str,
                       operation_type: str, ttl_s: int | None = None,
                       metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Lock the amount under reference_id (a repeat returns the same hold)."""
        return self._change(lambda: self.engine.reserve_amount(
            currency, exact_amount(amount), _kind(account_type), reference_id, operation_type,
            ttl_s, metadata))

    def release_reserve(self, reference_id: str) -> dict[str, Any]:
        return self._change(lambda: self.engine.release_reserve(reference_id))

    def commit_reserve(self, reference_id: str, amount: Any = None) -> dict[str, Any]:
        return self._change(lambda: self.engine.commit_reserve(reference_id,
                                                               exact_amount(amount)))

    def top_up_reserve(self, currency: str, amount: Any, account_type: Any,
                       source_reference: str) -> dict[str, Any]:
        return self._change(lambda: self.engine.top_up_reserve(
            currency, exact_amount(amount), _kind(account_type), source_reference))

    def withdraw_from_reserve(self, currency: str, amount: Any, account_type: Any,
                              destination_reference: str) -> dict[str, Any]:
        return self._change(lambda: self.engine.withdraw_from_reserve(
            currency, exact_amount(amount), _kind(account_type), destination_reference))

    def clear_cache(self) -> dict[str, Any]:
        self.reserve_accounts.clear()
        self.reserve_cache.clear()
        self.engine.clear_cache()
        return {"success": True, "message": "Reserve caches cleared"}

    # -- one place where the engine's errors become the document's dicts ------------------------

    def _answer(self, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return call()
        except ReserveError as exc:
            return exc.to_dict()

    def _change(self, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        self.reserve_cache.clear()  # before too: a change whose answer was lost still counts
        try:
            return self._answer(call)
        finally:
            self.reserve_cache.clear()

    def _cache_key(self, currency: str, account_type: Any) -> str:
        code = str(currency).upper()
        return f"{code}:{_kind(account_type) or ''}".lower()
