"""total_volume is money that moved: top-ups, withdrawals and commits (and settlements), never
locks, releases or expiries. Hand-computed: a top-up of 100, a hold of 30 committed at 20, a hold
of 10 released, a withdrawal of 5 -> 100 + 20 + 5 = 125 (the old sum of every amount: 175)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from engine.registry import CurrencyRegistry
from engine.service import ReserveService
from persistence.analytics import VOLUME_OPERATIONS, reserve_analytics
from persistence.migrate import upgrade
from persistence.store import ms_to_dt
from tests.engine_helpers import START_MS, Clock
from tests.persist_support import Stack


def _hand_computed(stack: Stack) -> None:
    service = ReserveService(stack.client, stack.settings, clock_ms=Clock())
    service.top_up_reserve("USDT", "100", None, "vol-top")
    service.reserve_amount("USDT", "30", None, "vol-h1", "swap")
    service.commit_reserve("vol-h1", "20")
    service.reserve_amount("USDT", "10", None, "vol-h2", "swap")
    service.release_reserve("vol-h2")
    service.withdraw_from_reserve("USDT", "5", None, "vol-wd")
    upgrade(stack.database_url)
    stack.persister().drain(timeout_s=30)


def test_volume_operations_are_the_money_that_moves() -> None:
    assert {"reserve_topup", "reserve_withdrawal", "reserve_commit"} == VOLUME_OPERATIONS


def test_analytics_total_volume_is_money_that_moved(stack: Stack) -> None:
    _hand_computed(stack)
    registry = CurrencyRegistry.load(stack.settings.currencies_path)
    now = ms_to_dt(START_MS) + timedelta(hours=1)
    usdt = reserve_analytics(stack.database_url, 1, registry, now=now)["by_currency"]["USDT"]
    assert usdt["total_volume"] == Decimal("125")
    assert usdt["transaction_count"] == 6
    assert usdt["operations"] == {"reserve_commit": 1, "reserve_lock": 2, "reserve_release": 1,
                                  "reserve_topup": 1, "reserve_withdrawal": 1}


def test_the_openapi_description_defines_total_volume() -> None:
    from api.openapi import CORE_PATHS

    get = CORE_PATHS["/wallet/reserves/analytics"]["get"]
    by_currency = get["responses"]["200"]["content"]["application/json"]["schema"][
        "properties"]["analytics"]["properties"]["by_currency"]
    assert "top-ups + withdrawals + commits" in by_currency["description"]


def test_report_volume_is_money_that_moved(stack: Stack) -> None:
    from persistence.report import build_report, row_values

    _hand_computed(stack)
    registry = CurrencyRegistry.load(stack.settings.currencies_path)
    report = build_report(stack.database_url, registry, "daily",
                          until=ms_to_dt(START_MS) + timedelta(hours=1))
    usdt = next(row_values(f) for f in report.rows if f.currency == "USDT")
    assert usdt["volume"] == "125.0"
    assert (usdt["reserved"], usdt["committed"], usdt["released"]) == ("40.0", "20.0", "10.0")
    assert usdt["net_change"] == "75.0"  # 100 - 5 - 20
