"""`reserves report`: a scripted week of operations on a hand-moved clock, persisted, then the
daily and weekly figures per currency checked to the minor unit (Postgres and SQLite)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.errors import InvalidRequest
from engine.registry import CurrencyRegistry
from engine.service import ReserveService
from persistence.migrate import upgrade
from persistence.report import build_report, period_bounds, render, row_values
from persistence.store import ms_to_dt
from tests.engine_helpers import START_MS, Clock
from tests.persist_support import Stack

DAY_S = 86_400
END = ms_to_dt(START_MS) + timedelta(days=3)  # the end of the reported period


def _script(stack: Stack) -> ReserveService:
    """Day 0: USDT 1000 topped up, 600 locked (h0). Day 2 (the last day before END): 500 more,
    750 locked (h1: 90 %), h0 committed 400 (the rest freed), h1 released, 100 withdrawn; UGX
    5000 topped up and 1000 locked for 60 s, expired by the sweeper. Day 4 (after END): more."""
    clock = Clock()
    service = ReserveService(stack.client, stack.settings, clock_ms=clock)
    service.top_up_reserve("USDT", "1000", None, "t0")
    service.reserve_amount("USDT", "600", None, "h0", "swap")
    clock.advance_s(2 * DAY_S + 3600)
    service.top_up_reserve("USDT", "500", None, "t1")
    service.reserve_amount("USDT", "750", None, "h1", "swap")
    service.commit_reserve("h0", "400")
    service.release_reserve("h1")
    service.withdraw_from_reserve("USDT", "100", None, "w1")
    service.top_up_reserve("UGX", "5000", None, "t2")
    service.reserve_amount("UGX", "1000", None, "h2", "sell", ttl_s=60)
    clock.advance_s(120)
    assert service.sweep().expired_count == 1
    clock.now_ms = START_MS + 4 * DAY_S * 1000
    service.top_up_reserve("USDT", "7", None, "t3")  # after END: in no report below
    service.reserve_amount("USDT", "1", None, "h3", "swap")
    upgrade(stack.database_url)
    stack.persister().drain(timeout_s=30)
    return service


def _rows(stack: Stack, period: str, **kwargs: object) -> dict[str, dict[str, object]]:
    registry = CurrencyRegistry.load(stack.settings.currencies_path)
    report = build_report(stack.database_url, registry, period, until=END, **kwargs)  # type: ignore[arg-type]
    return {f.currency: row_values(f) for f in report.rows}


def test_daily_and_weekly_figures(stack: Stack) -> None:
    _script(stack)
    daily = _rows(stack, "daily")
    usdt = daily["USDT"]
    assert (usdt["total"], usdt["available"], usdt["locked"]) == ("1000.0", "1000.0", "0.0")
    assert (usdt["utilization_pct"], usdt["status"]) == ("0.00", "healthy")
    assert usdt["peak_utilization_pct"] == "90.00"  # 1350 of 1500 after h1
    assert (usdt["reserved_count"], usdt["reserved"]) == (1, "750.0")
    assert (usdt["committed_count"], usdt["committed"]) == (1, "400.0")
    assert (usdt["released_count"], usdt["released"]) == (1, "750.0")
    assert (usdt["topped_up_count"], usdt["topped_up"]) == (1, "500.0")
    assert (usdt["withdrawn_count"], usdt["withdrawn"]) == (1, "100.0")
    assert usdt["volume"] == "1000.0"  # 500 in, 100 out, 400 committed: money that moved
    assert usdt["net_change"] == "0.0"  # 500 - 100 - 400
    ugx = daily["UGX"]
    assert (ugx["released_count"], ugx["released"]) == (1, "1000.0")  # the expiry
    assert (ugx["peak_utilization_pct"], ugx["net_change"]) == ("20.00", "5000.0")
    assert daily["BTC"]["volume"] == "0.0" and daily["BTC"]["total"] == "0.0"

    weekly = _rows(stack, "weekly")["USDT"]
    assert (weekly["reserved_count"], weekly["reserved"]) == (2, "1350.0")
    assert (weekly["topped_up_count"], weekly["topped_up"]) == (2, "1500.0")
    assert weekly["net_change"] == "1000.0"
    assert weekly["volume"] == "2000.0"  # 1500 in, 100 out, 400 committed
    assert weekly["peak_utilization_pct"] == "90.00"


def test_a_quiet_period_keeps_the_utilization_it_entered_with(stack: Stack) -> None:
    _script(stack)
    rows = _rows(stack, "daily", balances=None)
    registry = CurrencyRegistry.load(stack.settings.currencies_path)
    quiet = build_report(stack.database_url, registry, "daily", until=END - timedelta(days=1))
    usdt = {f.currency: row_values(f) for f in quiet.rows}["USDT"]
    assert usdt["volume"] == "0.0"  # nothing happened on day 1
    assert usdt["peak_utilization_pct"] == "60.00"  # h0's 600 of 1000, held all day
    assert (usdt["total"], usdt["locked"]) == ("1000.0", "600.0")
    assert rows["USDT"]["locked"] == "0.0"


def test_balances_from_redis_are_the_current_ones(stack: Stack) -> None:
    service = _script(stack)
    rows = _rows(stack, "daily", balances=service.get_all_reserves())
    assert (rows["USDT"]["total"], rows["USDT"]["locked"]) == ("1007.0", "1.0")  # day 4's too
    assert rows["USDT"]["volume"] == "1000.0"  # the flows are still the period's


def test_markdown_and_csv(stack: Stack) -> None:
    _script(stack)
    registry = CurrencyRegistry.load(stack.settings.currencies_path)
    report = build_report(stack.database_url, registry, "daily", until=END)
    text = render(report, "markdown")
    assert text.startswith("# Reserves report (daily)\n")
    assert "Period: 2027-01-17 08:00 UTC to 2027-01-18 08:00 UTC." in text
    assert "| USDT | crypto | healthy | 1000.0 | 1000.0 | 0.0 | 0.00 | 90.00 |" in text
    assert ("| USDT | 750.0 (1) | 400.0 (1) | 750.0 (1) | 500.0 (1) | 100.0 (1) | 1000.0 | 0.0 |"
            in text)
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert [r["currency"] for r in rows] == [c.code for c in registry]
    ugx = next(r for r in rows if r["currency"] == "UGX")
    assert (ugx["topped_up"], ugx["released"], ugx["peak_utilization_pct"]) == (
        "5000.0", "1000.0", "20.00")


def test_period_bounds() -> None:
    end = datetime(2026, 11, 25, tzinfo=UTC)
    assert period_bounds("weekly", end) == (datetime(2026, 11, 18, tzinfo=UTC), end)
    with pytest.raises(InvalidRequest, match="period must be one of daily, weekly, monthly"):
        period_bounds("yearly", end)
    with pytest.raises(InvalidRequest, match="needs a time zone"):
        period_bounds("daily", datetime(2026, 11, 25))


@pytest.mark.real
@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_report_command(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    monkeypatch.setenv("RESERVES_REDIS_URL", stack.settings.redis_url or "")
    monkeypatch.setenv("RESERVES_DATABASE_URL", stack.database_url)
    monkeypatch.setenv("RESERVES_KEY_PREFIX", stack.settings.key_prefix)
    monkeypatch.setenv("RESERVES_SHARDS", str(stack.settings.shard_count))
    _script(stack)
    out = tmp_path / "weekly.csv"
    assert main(["report", "--period", "weekly", "--format", "csv", "--out", str(out),
                 "--until", END.isoformat()]) == 0
    usdt = next(r for r in csv.DictReader(io.StringIO(out.read_text())) if r["currency"] == "USDT")
    assert (usdt["topped_up"], usdt["net_change"], usdt["locked"]) == ("1500.0", "1000.0", "0.0")
    assert "wrote the weekly report to" in capsys.readouterr().err
    # Without --until: the balances are Redis's now (day 4's hold is there)
    assert main(["report", "--period", "daily"]) == 0
    assert "| USDT | crypto | healthy | 1007.0 | 1006.0 | 1.0 |" in capsys.readouterr().out
    monkeypatch.setenv("RESERVES_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    assert main(["report", "--period", "daily"]) == 1  # not migrated: a message, no traceback
    # (SQLite reports a missing table as an OperationalError: classed as "unavailable")
    assert "no such table: transactions" in capsys.readouterr().err
