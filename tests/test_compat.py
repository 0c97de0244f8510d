"""engine.compat: the design document's integration code runs as written, on fakeredis and on
the real Redis, and every method answers the document's dicts (refusals included)."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from engine import compat
from engine.compat import AccountType, ReserveService
from engine.errors import InsufficientReserve, InvalidRequest
from engine.service import ReserveService as EngineService

# The document's "Example Integration" (reserve-management-system.md, section "Integration with
# Swap Operations"), character for character, the trailing space included.
DOC_SNIPPET = '''\
# Check and reserve from currency
from_reserve_check = self.reserve_service.check_reserve_sufficiency(
    from_currency, from_amount, AccountType.CRYPTO, "swap"
)

if not from_reserve_check["is_sufficient"]:
    return {"error": "Insufficient system reserve"}

# Reserve amounts
from_reserve_result = self.reserve_service.reserve_amount(
    from_currency, from_amount, AccountType.CRYPTO, 
    f"{reference_id}_from", "swap"
)
'''

# The document's ReserveService constructor, around which the snippet's class is built.
CLASS_SOURCE = '''\
class SwapService:
    def __init__(self, session):
        self.reserve_service = ReserveService(session)

    def reserve_swap(self, from_currency, from_amount, reference_id):
{body}
        return from_reserve_result
'''

# The shared design document, when this checkout sits next to it (../shared or ../../shared).
DESIGN_DOCUMENTS = [p / "shared" / "reserve-management-system.md"
                    for p in Path(__file__).resolve().parents]


def facade(backend: dict[str, Any], **kwargs: Any) -> ReserveService:
    return ReserveService(None, client=backend["sync"], settings=backend["settings"], **kwargs)


def swap_service_class(backend: dict[str, Any]) -> Any:
    """The document's code, exec'd as written, with ReserveService bound to this backend."""
    def reserve_service(session: Any) -> ReserveService:
        return ReserveService(session, client=backend["sync"], settings=backend["settings"])

    source = CLASS_SOURCE.format(body=textwrap.indent(DOC_SNIPPET, " " * 8))
    namespace: dict[str, Any] = {"ReserveService": reserve_service, "AccountType": AccountType}
    exec(compile(source, "reserve-management-system.md", "exec"), namespace)
    return namespace["SwapService"]


def test_the_snippet_is_the_documents() -> None:
    found = [p for p in DESIGN_DOCUMENTS if p.exists()]
    if not found:
        pytest.skip("the design document (shared/reserve-management-system.md) is not beside "
                    "this checkout")
    assert DOC_SNIPPET in found[0].read_text(encoding="utf-8")


def test_document_integration_example_runs_verbatim(backend: dict[str, Any]) -> None:
    SwapService = swap_service_class(backend)
    swaps = SwapService(session=None)
    assert swaps.reserve_service.top_up_reserve("USDT", 1500.0, AccountType.CRYPTO,
                                                "initial_setup")["success"] is True

    result = swaps.reserve_swap("USDT", 1000.0, "swap_001")
    assert result == {
        "success": True, "reference_id": "swap_001_from", "reserved_amount": D("1000"),
        "available_balance": D("500"), "locked_balance": D("1000"), "status": "moderate",
        "hold_state": "pending", "committed_amount": D("0"), "released_amount": D("0"),
        "transaction_id": result["transaction_id"],
    }
    assert isinstance(result["transaction_id"], int)
    # the document's refusal branch: the check says no, nothing is locked
    assert swaps.reserve_swap("USDT", 500.5, "swap_002") == {
        "error": "Insufficient system reserve"}
    balance = swaps.reserve_service.get_reserve_balance("USDT", AccountType.CRYPTO)
    assert (balance["locked_balance"], balance["available_balance"]) == (D("1000"), D("500"))
    # the same reference again: the same hold, nothing more locked
    again = swaps.reserve_service.reserve_amount("USDT", 1000.0, AccountType.CRYPTO,
                                                 "swap_001_from", "swap")
    assert (again["success"], again["locked_balance"]) == (True, D("1000"))
    assert swaps.reserve_service.release_reserve("swap_001_from")["hold_state"] == "released"


def test_refusal_is_the_documents_error_response(backend: dict[str, Any]) -> None:
    """The document's Error Responses example, reproduced to the figure."""
    svc = facade(backend)
    svc.top_up_reserve("USDT", 2500.0, AccountType.CRYPTO, "setup")
    svc.reserve_amount("USDT", 2000.0, AccountType.CRYPTO, "swap_a_from", "swap")
    refusal = svc.reserve_amount("USDT", 1000.0, AccountType.CRYPTO, "swap_b_from", "swap")
    assert refusal == {
        "success": False,
        "error": "Insufficient reserve balance. Required: 1000.0, Available: 500.0",
        "code": "exceeds_available",
        "reserve_status": {"is_sufficient": False, "required_amount": D("1000.0"),
                           "available_amount": D("500.0"), "utilization_percentage": D("80.0"),
                           "status": "warning"},
    }
    withdrawal = svc.withdraw_from_reserve("USDT", 1000.0, AccountType.CRYPTO, "out_1")
    assert withdrawal == refusal
    check = svc.check_reserve_sufficiency("USDT", 1000.0, AccountType.CRYPTO, "swap")
    assert check == {"success": True, **refusal["reserve_status"]}
    balance = svc.get_reserve_balance("USDT", AccountType.CRYPTO)
    assert (balance["total_balance"], balance["locked_balance"]) == (D("2500"), D("2000"))


@pytest.mark.parametrize(("amount", "currency", "total"), [
    (1000.0, "USDT", "1000.0"), (0.1, "USDT", "0.1"), (0.000001, "USDT", "0.000001"),
    (12345.678901, "USDT", "12345.678901"), (1e-08, "BTC", "0.00000001"), (50000.0, "UGX", "50000"),
    (3, "UGX", "3"), ("2.5", "USDT", "2.5"), (D("7.25"), "USDT", "7.25"),
])
def test_amounts_read_by_their_shortest_decimal_text(
        backend: dict[str, Any], amount: Any, currency: str, total: str) -> None:
    svc = facade(backend)
    result = svc.top_up_reserve(currency, amount, None, "t1")
    assert (result["success"], result["topped_up_amount"], result["new_total_balance"]) == (
        True, D(total), D(total))
    assert compat.exact_amount(0.1) == D("0.1") and str(compat.exact_amount(1000.0)) == "1000.0"


@pytest.mark.parametrize(("amount", "currency", "error"), [
    (0.1 + 0.2, "USDT",  # 0.30000000000000004: its shortest text has 17 decimals
     "amount 0.30000000000000004 has more than 6 decimal places, the precision of USDT"),
    (0.5, "UGX", "amount 0.5 has more than 0 decimal places, the precision of UGX"),
    (1e-07, "USDT", "amount 1E-7 has more than 6 decimal places, the precision of USDT"),
    (float("nan"), "USDT", "amount must be a finite number"),
    (float("inf"), "USDT", "amount must be a finite number"),
    (-5.0, "USDT", "amount must be greater than zero"),
    (0.0, "USDT", "amount must be greater than zero"),
    (True, "USDT", "amount must be a number"),
])
def test_amounts_the_currency_cannot_hold_are_refused(
        backend: dict[str, Any], amount: Any, currency: str, error: str) -> None:
    svc = facade(backend)
    for result in (svc.top_up_reserve(currency, amount, None, "t1"),
                   svc.reserve_amount(currency, amount, None, "h1", "swap"),
                   svc.withdraw_from_reserve(currency, amount, None, "w1")):
        assert (result["success"], result["error"]) == (False, error)
    check = svc.check_reserve_sufficiency(currency, amount, None, "swap")
    assert (check["success"], check["is_sufficient"], check["error"]) == (False, False, error)
    balance = svc.get_reserve_balance(currency)
    assert (balance["total_balance"], balance["locked_balance"]) == (D(0), D(0))


def test_account_types_and_accounts(backend: dict[str, Any]) -> None:
    assert (AccountType.CRYPTO, AccountType.FIAT) == ("crypto", "fiat")
    svc = facade(backend)
    account = svc.get_reserve_account("USDT", AccountType.CRYPTO)
    assert {k: account[k] for k in ("success", "label", "currency", "account_type")} == {
        "success": True, "label": "RESERVE_USDT_CRYPTO", "currency": "USDT",
        "account_type": "crypto"}
    assert svc.reserve_accounts["RESERVE_USDT_CRYPTO"]["account_number"] == account[
        "account_number"]
    fiat = svc.get_reserve_balance("UGX", AccountType.FIAT)
    assert (fiat["success"], fiat["account_type"], fiat["status"]) == (True, "fiat", "healthy")
    assert svc.get_reserve_balance("USDT", AccountType.FIAT) == {
        "success": False, "error": "USDT is a crypto currency, not fiat",
        "code": "account_type_mismatch"}
    assert svc.get_reserve_account("XYZ", AccountType.CRYPTO) == {
        "success": False, "error": "Unknown currency: XYZ", "code": "unknown_currency"}


def test_the_documents_attributes(backend: dict[str, Any]) -> None:
    plain = ReserveService(session=None)  # no I/O until a call
    assert (plain.session, plain.reserve_accounts, plain.reserve_cache, plain.cache_ttl) == (
        None, {}, {}, 30)
    session = object()
    assert ReserveService(session).session is session


def test_every_method_answers_a_dict(backend: dict[str, Any]) -> None:
    svc = facade(backend)
    top = svc.top_up_reserve("USDT", 1000.0, AccountType.CRYPTO, "bank_transfer_12345")
    assert {k: top[k] for k in ("success", "topped_up_amount", "new_total_balance")} == {
        "success": True, "topped_up_amount": D("1000"), "new_total_balance": D("1000")}
    held = svc.reserve_amount("USDT", 100.0, AccountType.CRYPTO, "h1", "swap", ttl_s=300)
    assert held["locked_balance"] == D("100")
    assert svc.get_hold("h1")["hold"]["state"] == "pending"
    committed = svc.commit_reserve("h1", 40.0)
    assert (committed["committed_amount"], committed["released_amount"]) == (D("40"), D("60"))
    assert svc.release_reserve("h1") == {
        "success": False, "error": "Hold h1 was already committed",
        "code": "hold_already_committed", "state": "committed"}
    assert svc.release_reserve("nope") == {
        "success": False, "error": "Hold nope not found", "code": "hold_not_found"}
    out = svc.withdraw_from_reserve("USDT", 500.0, AccountType.CRYPTO, "maintenance_withdrawal")
    assert (out["success"], out["withdrawn_amount"], out["new_total_balance"]) == (
        True, D("500"), D("460"))
    status = svc.get_all_reserves_status()
    assert status["success"] is True
    assert status["reserves"]["crypto"]["USDT"]["total_balance"] == D("460")
    assert status["reserves"]["summary"] == {"overall_status": "healthy",
                                             "critical_reserves": [], "warning_reserves": []}
    assert set(status["reserves"]["fiat"]) >= {"UGX", "KES"}
    assert svc.clear_cache() == {"success": True, "message": "Reserve caches cleared"}
    assert svc.reserve_cache == {} and svc.reserve_accounts == {}
    bad = svc.get_reserve_analytics(0)
    assert bad == {"success": False, "error": "period_days must be from 1 to 3650"}


def test_balance_cache_lives_cache_ttl_and_drops_on_changes(backend: dict[str, Any]) -> None:
    now = [100.0]
    svc = facade(backend, monotonic_s=lambda: now[0])
    other = facade(backend)  # another process's changes are not seen until the TTL passes
    svc.top_up_reserve("USDT", 10.0, None, "t1")
    assert svc.get_reserve_balance("USDT")["total_balance"] == D("10")
    other.top_up_reserve("USDT", 5.0, None, "t2")
    now[0] += 29
    assert svc.get_reserve_balance("USDT")["total_balance"] == D("10")
    now[0] += 1
    assert svc.get_reserve_balance("USDT")["total_balance"] == D("15")
    other.top_up_reserve("USDT", 5.0, None, "t3")
    svc.reserve_amount("USDT", 1.0, None, "h1", "swap")  # a change here drops the cache
    assert svc.get_reserve_balance("USDT")["locked_balance"] == D("1")
    assert svc.get_reserve_balance("USDT")["total_balance"] == D("20")
    # checks never use the cache
    other.top_up_reserve("USDT", 100.0, None, "t4")
    assert svc.check_reserve_sufficiency("USDT", 119.0)["is_sufficient"] is True


def test_the_engine_service_still_raises(backend: dict[str, Any]) -> None:
    """The typed engine stays as it was: floats refused, refusals raised."""
    engine = EngineService(backend["sync"], backend["settings"])
    with pytest.raises(InvalidRequest, match="not a float"):
        engine.top_up_reserve("USDT", 1000.0, "crypto", "t1")
    engine.top_up_reserve("USDT", "500", "crypto", "t1")
    with pytest.raises(InsufficientReserve):
        engine.reserve_amount("USDT", "1000", "crypto", "h1", "swap")


@pytest.mark.real
def test_analytics_from_the_ledger(backend: dict[str, Any], fresh_database_url: str) -> None:
    from persistence import migrate
    from persistence.store import close_shared_engines
    from persistence.worker import Persister

    settings = replace(backend["settings"], database_url=fresh_database_url)
    migrate.ensure_schema(fresh_database_url)
    svc = ReserveService(None, client=backend["sync"], settings=settings)
    svc.top_up_reserve("USDT", 1000.0, AccountType.CRYPTO, "t1")
    svc.reserve_amount("USDT", 250.0, AccountType.CRYPTO, "h1", "swap")
    svc.release_reserve("h1")
    persister = Persister(backend["sync"], settings, fresh_database_url, "p1")
    try:
        persister.drain(timeout_s=30)
        result = svc.get_reserve_analytics(7)
    finally:
        persister.close()
        close_shared_engines()
    assert result["success"] is True
    assert result["analytics"]["period_days"] == 7
    assert result["analytics"]["by_currency"]["USDT"]["operations"] == {
        "reserve_topup": 1, "reserve_lock": 1, "reserve_release": 1}
