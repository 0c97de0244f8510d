"""Reports on a schedule: calendar boundaries (Dec -> Jan, February of a leap year), each report
written exactly once (two schedulers racing on one database, a restart, a claim whose process
died), missed periods caught up within the bound, the HTML carrying the CSV's figures, the
webhook POST, the CLI and the served instance's wiring. The clock is always passed explicitly.
Postgres (fresh database) and SQLite."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from engine.registry import CurrencyRegistry
from engine.service import ReserveService
from persistence import limits
from persistence.migrate import upgrade
from persistence.report import closed_periods, period_bounds
from persistence.report_schedule import ReportScheduler, WrittenReport, file_stem
from persistence.store import dt_to_ms
from tests.engine_helpers import Clock
from tests.persist_support import Stack


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


NEW_YEAR = utc(2027, 1, 1)
ALL_DUE = 7 + 4 + 3  # limits.report_catch_up_count_max: daily, weekly, monthly


# -- periods ----------------------------------------------------------------------------------

def test_monthly_boundaries_december_to_january_and_a_leap_february() -> None:
    assert closed_periods("monthly", NEW_YEAR, 2) == [
        (utc(2026, 11, 1), utc(2026, 12, 1)), (utc(2026, 12, 1), NEW_YEAR)]
    assert closed_periods("monthly", utc(2027, 1, 31, 23, 59), 1) == [
        (utc(2026, 12, 1), NEW_YEAR)]  # January has not closed yet
    [(start, end)] = closed_periods("monthly", utc(2028, 3, 15, 10), 1)
    assert (start, end, end - start) == (utc(2028, 2, 1), utc(2028, 3, 1), timedelta(days=29))
    [(start, end)] = closed_periods("monthly", utc(2027, 3, 1), 1)
    assert end - start == timedelta(days=28)
    # on demand, a month back from any time, the day clamped
    assert period_bounds("monthly", utc(2028, 3, 31, 12)) == (utc(2028, 2, 29, 12),
                                                              utc(2028, 3, 31, 12))
    assert period_bounds("monthly", utc(2027, 1, 15))[0] == utc(2026, 12, 15)


def test_daily_and_weekly_boundaries() -> None:
    assert closed_periods("daily", utc(2027, 1, 1, 0, 0, 30), 2) == [
        (utc(2026, 12, 30), utc(2026, 12, 31)), (utc(2026, 12, 31), NEW_YEAR)]
    # weeks start on Monday 00:00 UTC: Wed 2027-01-06 -> the week of Mon 2026-12-28 closed
    assert closed_periods("weekly", utc(2027, 1, 6, 15), 1) == [
        (utc(2026, 12, 28), utc(2027, 1, 4))]
    assert closed_periods("weekly", utc(2027, 1, 4), 1) == [(utc(2026, 12, 28), utc(2027, 1, 4))]
    # another time zone names the same instant
    cet = datetime.fromisoformat("2027-01-01T00:30:00+01:00")
    assert closed_periods("daily", cet, 1) == [(utc(2026, 12, 30), utc(2026, 12, 31))]


def test_file_names() -> None:
    assert file_stem("daily", utc(2026, 12, 1)) == "daily/2026-12-01"
    assert file_stem("weekly", utc(2026, 11, 30)) == "weekly/2026-11-30"
    assert file_stem("monthly", utc(2026, 12, 1)) == "monthly/2026-12"


def test_a_period_is_due_only_after_the_grace(tmp_path: Path) -> None:
    scheduler = ReportScheduler("sqlite://", CurrencyRegistry.load(), tmp_path)
    just_closed = NEW_YEAR + timedelta(seconds=limits.report_grace_s - 1)
    assert ("daily", utc(2026, 12, 31), NEW_YEAR) not in scheduler.due(just_closed)
    due = scheduler.due(NEW_YEAR + timedelta(seconds=limits.report_grace_s))
    assert ("daily", utc(2026, 12, 31), NEW_YEAR) in due
    assert ("monthly", utc(2026, 12, 1), NEW_YEAR) in due
    assert len(due) == ALL_DUE


# -- written reports --------------------------------------------------------------------------

def _script(stack: Stack) -> None:
    """Dec 31 2026: USDT 1000 topped up, 400 held, 100 of it committed at 23:59:59.999 (the
    rest freed by the commit: no release). Jan 1 2027 00:00:00.000: 50 withdrawn (January's).
    Jan 1 noon: UGX 5000."""
    clock = Clock(dt_to_ms(utc(2026, 12, 31, 10)))
    service = ReserveService(stack.client, stack.settings, clock_ms=clock)
    service.top_up_reserve("USDT", "1000", None, "s-t1")
    service.reserve_amount("USDT", "400", None, "s-h1", "swap")
    clock.now_ms = dt_to_ms(NEW_YEAR) - 1
    service.commit_reserve("s-h1", "100")
    clock.now_ms = dt_to_ms(NEW_YEAR)
    service.withdraw_from_reserve("USDT", "50", None, "s-w1")
    clock.now_ms = dt_to_ms(utc(2027, 1, 1, 12))
    service.top_up_reserve("UGX", "5000", None, "s-t2")
    upgrade(stack.database_url)
    stack.persister().drain(timeout_s=30)


def _scheduler(stack: Stack, directory: Path, owner: str, **kwargs: Any) -> ReportScheduler:
    registry = CurrencyRegistry.load(stack.settings.currencies_path)
    return ReportScheduler(stack.database_url, registry, directory, owner=owner, **kwargs)


def _csv(path: Path) -> dict[str, dict[str, str]]:
    return {r["currency"]: r for r in csv.DictReader(io.StringIO(path.read_text()))}


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value  # SQLite: naive UTC


def _names(written: list[WrittenReport]) -> list[str]:
    return [file_stem(w.period, w.start) for w in written]


def _files(directory: Path) -> list[str]:
    """The files in the period folders (the SQLite database may sit beside them)."""
    return sorted(str(p.relative_to(directory)) for p in directory.glob("*/*") if p.is_file())


class _Table(HTMLParser):
    """The rows (header first) of <table id="figures">."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_table = self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("id", "figures") in attrs:
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag in ("td", "th"):
            self._in_cell = True
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False
        elif tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.rows[-1][-1] += data


def test_reports_are_written_when_their_period_closes(stack: Stack, tmp_path: Path) -> None:
    _script(stack)
    now = NEW_YEAR + timedelta(seconds=limits.report_grace_s)
    written = _scheduler(stack, tmp_path, "a").write_due(now)
    assert _names(written) == [
        *(f"daily/2026-12-{d}" for d in range(25, 32)),
        *(f"weekly/2026-{md}" for md in ("11-30", "12-07", "12-14", "12-21")),
        "monthly/2026-10", "monthly/2026-11", "monthly/2026-12"]
    assert _files(tmp_path) == sorted(f"{n}.{ext}" for n in _names(written)
                                      for ext in ("csv", "html"))  # no temporary file left
    for name in ("daily/2026-12-31", "monthly/2026-12"):  # the same events: the same figures
        usdt = _csv(tmp_path / f"{name}.csv")["USDT"]
        assert (usdt["topped_up"], usdt["reserved"], usdt["committed"], usdt["released"]) == (
            "1000.0", "400.0", "100.0", "0.0")
        assert (usdt["withdrawn"], usdt["withdrawn_count"]) == ("0.0", "0")  # Jan 1 00:00:00.000
        assert (usdt["volume"], usdt["net_change"]) == ("1100.0", "900.0")
        assert (usdt["total"], usdt["locked"], usdt["peak_utilization_pct"]) == (
            "900.0", "0.0", "40.00")
    assert _csv(tmp_path / "daily/2026-12-30.csv")["USDT"]["volume"] == "0.0"
    rows = stack.store().report_rows()
    assert len(rows) == ALL_DUE
    assert all(r.claimed_by == "a" and r.written_at is not None for r in rows)
    assert {Path(r.path).name for r in rows} == {Path(n).name for n in _names(written)}


def test_the_html_page_carries_the_csv_figures_and_nothing_external(
        stack: Stack, tmp_path: Path) -> None:
    _script(stack)
    _scheduler(stack, tmp_path, "a").write_due(NEW_YEAR + timedelta(hours=1))
    for name in ("daily/2026-12-31", "monthly/2026-12", "daily/2026-12-30"):
        page = (tmp_path / f"{name}.html").read_text()
        table = _Table()
        table.feed(page)
        assert table.rows == list(csv.reader(io.StringIO((tmp_path / f"{name}.csv").read_text())))
        assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 1
        assert "<script" not in page and "src=" not in page and "href=" not in page
        assert page.replace('xmlns="http://www.w3.org/2000/svg"', "").count("http") == 0
    page = (tmp_path / "daily/2026-12-31.html").read_text()
    assert "<title>USDT: flows of the period</title>" in page  # a chart per moving currency
    assert ">1100.0</text>" in page and ">1000.0 (1)</text>" in page  # volume; topped up
    assert "No flows in this period." in (tmp_path / "daily/2026-12-30.html").read_text()


def test_a_restart_does_not_rewrite(stack: Stack, tmp_path: Path) -> None:
    _script(stack)
    now = NEW_YEAR + timedelta(minutes=5)
    assert len(_scheduler(stack, tmp_path, "first").write_due(now)) == ALL_DUE
    mark = tmp_path / "daily/2026-12-31.csv"
    mark.write_text("kept\n")
    (tmp_path / "daily/2026-12-30.csv").unlink()
    restarted = _scheduler(stack, tmp_path, "second")  # a new process: another owner
    assert restarted.write_due(now) == []
    assert restarted.write_due(now + timedelta(hours=23)) == []  # nothing else closed
    assert mark.read_text() == "kept\n"
    assert not (tmp_path / "daily/2026-12-30.csv").exists()  # written once, even if removed
    assert {r.claimed_by for r in stack.store().report_rows()} == {"first"}


def test_missed_periods_are_caught_up_within_the_bound(stack: Stack, tmp_path: Path) -> None:
    _script(stack)
    scheduler = _scheduler(stack, tmp_path, "a")
    assert len(scheduler.write_due(NEW_YEAR + timedelta(minutes=5))) == ALL_DUE
    # down from Jan 1 00:05 to Jan 5 09:00: four days and the week of Dec 28 closed meanwhile
    caught_up = _scheduler(stack, tmp_path, "b").write_due(utc(2027, 1, 5, 9))
    assert _names(caught_up) == ["daily/2027-01-01", "daily/2027-01-02", "daily/2027-01-03",
                                 "daily/2027-01-04", "weekly/2026-12-28"]
    week = _csv(tmp_path / "weekly/2026-12-28.csv")
    assert (week["USDT"]["volume"], week["USDT"]["withdrawn"]) == ("1150.0", "50.0")
    assert (week["UGX"]["topped_up"], week["UGX"]["total"]) == ("5000.0", "5000.0")
    assert _csv(tmp_path / "daily/2027-01-01.csv")["USDT"]["net_change"] == "-50.0"
    # down again until Feb 20: only the last 7 days, 4 weeks and 3 months are looked at
    caught_up = _scheduler(stack, tmp_path, "c").write_due(utc(2027, 2, 20, 0, 5))
    assert _names(caught_up) == [
        *(f"daily/2027-02-{d}" for d in range(13, 20)),
        *(f"weekly/2027-{md}" for md in ("01-18", "01-25", "02-01", "02-08")),
        "monthly/2027-01"]
    assert not (tmp_path / "daily/2027-01-05.csv").exists()  # beyond the bound: skipped
    january = _csv(tmp_path / "monthly/2027-01.csv")
    assert (january["USDT"]["withdrawn"], january["USDT"]["volume"]) == ("50.0", "50.0")


def test_two_schedulers_racing_write_each_report_once(stack: Stack, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Two schedulers (as two processes: owners of their own) run every pass at the same
    moment, on one database and one folder; each report is claimed and written by one."""
    from persistence import report_schedule

    _script(stack)
    writes: list[str] = []  # every file write, by path (list.append is atomic)
    real_write = report_schedule.write_atomically

    def counted(path: Path, text: str) -> None:
        writes.append(str(path.relative_to(tmp_path)))
        real_write(path, text)

    monkeypatch.setattr(report_schedule, "write_atomically", counted)
    schedulers = [_scheduler(stack, tmp_path, f"racer-{i}") for i in range(2)]
    passes = [NEW_YEAR + timedelta(minutes=5), utc(2027, 1, 5, 9), utc(2027, 2, 20, 0, 5),
              utc(2027, 2, 21, 0, 5)]
    results: dict[str, list[WrittenReport]] = {s.owner: [] for s in schedulers}
    errors: list[BaseException] = []
    for now in passes:
        barrier = threading.Barrier(len(schedulers))

        def run(scheduler: ReportScheduler, at: datetime = now,
                start: threading.Barrier = barrier) -> None:
            try:
                start.wait(timeout=30)
                results[scheduler.owner] += scheduler.write_due(at)
            except BaseException as exc:  # re-raised below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(s,)) for s in schedulers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
    assert errors == []
    a, b = (_names(results[s.owner]) for s in schedulers)
    assert set(a).isdisjoint(b)
    assert len(a) + len(b) == len(set(a) | set(b)) == ALL_DUE + 5 + 12 + 1  # then Feb 20
    rows = stack.store().report_rows()
    assert len(rows) == len(a) + len(b)
    assert all(r.written_at is not None for r in rows)
    owner_of = {file_stem(r.period, _aware(r.period_start)): r.claimed_by for r in rows}
    assert owner_of == {**dict.fromkeys(a, "racer-0"), **dict.fromkeys(b, "racer-1")}
    assert len(_files(tmp_path)) == 2 * len(rows)
    assert sorted(writes) == _files(tmp_path)  # each file written once, by one of them


def test_a_claim_whose_process_died_is_taken_over_after_the_lease(
        stack: Stack, tmp_path: Path) -> None:
    _script(stack)
    store = stack.store()
    t0 = NEW_YEAR + timedelta(minutes=5)
    assert store.claim_report("daily", utc(2026, 12, 31), NEW_YEAR, "dead", t0,
                              limits.report_claim_lease_s)
    assert not store.claim_report("daily", utc(2026, 12, 31), NEW_YEAR, "other", t0,
                                  limits.report_claim_lease_s)
    live = _scheduler(stack, tmp_path, "live")
    assert "daily/2026-12-31" not in _names(live.write_due(t0 + timedelta(minutes=1)))
    assert not (tmp_path / "daily/2026-12-31.csv").exists()
    within = t0 + timedelta(seconds=limits.report_claim_lease_s - 1)
    assert live.write_due(within) == []
    after = t0 + timedelta(seconds=limits.report_claim_lease_s + 1)
    assert _names(live.write_due(after)) == ["daily/2026-12-31"]
    assert _csv(tmp_path / "daily/2026-12-31.csv")["USDT"]["volume"] == "1100.0"
    # the dead process, back, cannot mark it written: the report is the live one's
    assert not store.finish_report("daily", utc(2026, 12, 31), "dead", after, "x")
    # an owner may retry its own unfinished claim at once (its write failed)
    assert store.claim_report("daily", utc(2026, 12, 30), utc(2026, 12, 31), "live", after,
                              limits.report_claim_lease_s) is False  # written already
    assert store.claim_report("weekly", utc(2026, 12, 28), utc(2027, 1, 4), "live", after,
                              limits.report_claim_lease_s)
    assert store.claim_report("weekly", utc(2026, 12, 28), utc(2027, 1, 4), "live", after,
                              limits.report_claim_lease_s)


class _Receiver:
    """A local HTTP endpoint that records each POST (body, headers) and answers 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((body, dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    started = _Receiver()
    yield started
    started.close()


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_a_report_waits_for_the_persister(stack: Stack, tmp_path: Path) -> None:
    """Events before a period's end not yet persisted: its report waits (instead of being
    written for good without them); a lag unknown or unreadable: every report waits."""
    _script(stack)
    lag: dict[str, Any] = {"oldest_unpersisted_age_s": 2 * 3600.0, "pending": 1, "unread": 0}

    def read_lag() -> dict[str, Any] | None:
        if lag.get("fail"):
            raise ConnectionError("Redis is away")
        return lag if lag else None

    scheduler = _scheduler(stack, tmp_path, "a", lag_source=read_lag)
    now = NEW_YEAR + timedelta(hours=1)  # the oldest unpersisted event: Dec 31 23:00
    written = _names(scheduler.write_due(now))
    assert len(written) == ALL_DUE - 2
    assert "daily/2026-12-31" not in written and "monthly/2026-12" not in written
    assert "daily/2026-12-30" in written  # ended before the oldest unpersisted event
    lag["fail"] = True
    assert scheduler.write_due(now) == []
    lag.clear()
    assert scheduler.write_due(now) == []  # unknown
    lag.update(oldest_unpersisted_age_s=0.0, pending=0, unread=0)  # caught up
    assert _names(scheduler.write_due(now)) == ["daily/2026-12-31", "monthly/2026-12"]


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_the_lag_source_is_the_persisters(stack: Stack) -> None:
    from persistence.report_schedule import persister_lag

    ReserveService(stack.client, stack.settings).top_up_reserve("USDT", "1", None, "lag-1")
    upgrade(stack.database_url)
    read = persister_lag(stack.settings)
    before = read()
    assert before is not None and before["unread"] + before["pending"] == 2  # open, top-up
    stack.persister().drain(timeout_s=30)
    after = read()
    assert after is not None
    assert (after["unread"], after["pending"], after["oldest_unpersisted_age_s"]) == (0, 0, 0.0)


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_reports_are_posted_to_the_webhook_signed(stack: Stack, tmp_path: Path,
                                                  receiver: _Receiver) -> None:
    from engine.monitoring.webhooks import SIGNATURE_HEADER, verify

    _script(stack)
    scheduler = _scheduler(stack, tmp_path, "a", webhook_urls=[receiver.url],
                           webhook_secret="s3cret")
    written = asyncio.run(scheduler.run_once(NEW_YEAR + timedelta(minutes=5)))
    assert len(written) == len(receiver.requests) == ALL_DUE
    payloads = []
    for body, headers in receiver.requests:
        assert verify("s3cret", body, headers[SIGNATURE_HEADER])
        payloads.append(json.loads(body))
    day = next(p for p in payloads if p["period"] == "daily"
               and p["period_start"] == "2026-12-31T00:00:00+00:00")
    assert (day["type"], day["period_end"], day["files"]) == (
        "report", "2027-01-01T00:00:00+00:00", ["2026-12-31.csv", "2026-12-31.html"])
    assert day["csv"] == (tmp_path / "daily/2026-12-31.csv").read_text()
    usdt = next(f for f in day["figures"] if f["currency"] == "USDT")
    assert (usdt["volume"], usdt["committed"]) == ("1100.0", "100.0")
    assert asyncio.run(scheduler.run_once(NEW_YEAR + timedelta(minutes=6))) == []
    assert len(receiver.requests) == ALL_DUE  # posted once, with the report


# -- the command and the served instance ------------------------------------------------------

@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_report_schedule_command(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    _script(stack)
    monkeypatch.delenv("RESERVES_REDIS_URL", raising=False)
    monkeypatch.setenv("RESERVES_DATABASE_URL", stack.database_url)
    out = tmp_path / "reports"
    # the real clock: whatever today is, the last 7 days, 4 weeks and 3 months are closed
    assert main(["report", "--schedule", "--dir", str(out), "--once"]) == 0
    assert len(_files(out)) == 2 * ALL_DUE
    assert capsys.readouterr().err.count("wrote the ") == ALL_DUE
    assert main(["report", "--schedule", "--dir", str(out), "--once"]) == 0
    assert capsys.readouterr().err == ""  # nothing rewritten
    assert main(["report", "--period", "monthly", "--format", "html",
                 "--until", NEW_YEAR.isoformat()]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>")
    assert "Reserves report (monthly): 2026-12-01 00:00 UTC to 2027-01-01 00:00 UTC" in page
    with pytest.raises(SystemExit, match="--schedule needs --dir"):
        main(["report", "--schedule"])
    with pytest.raises(SystemExit, match="--period is required"):
        main(["report"])
    monkeypatch.delenv("RESERVES_ALERT_WEBHOOKS", raising=False)
    monkeypatch.delenv("RESERVES_ALERT_CONFIG", raising=False)
    with pytest.raises(SystemExit, match="--post needs RESERVES_ALERT_WEBHOOKS"):
        main(["report", "--schedule", "--dir", str(out), "--once", "--post"])


async def test_a_served_instance_writes_the_reports(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """RESERVES_REPORTS_DIR set: the app's background tasks write the closed periods' reports
    (the first pass runs at start-up); unset, no scheduler."""
    import fakeredis

    from api.app import create_app
    from api.context import ApiConfig
    from engine.config import Settings
    from engine.engine import ReserveEngine
    from persistence.report_schedule import scheduler_from_env

    settings = replace(Settings(), database_url=f"sqlite:///{tmp_path / 'reserves.db'}")
    registry = CurrencyRegistry.load(settings.currencies_path)
    monkeypatch.delenv("RESERVES_REPORTS_DIR", raising=False)
    assert scheduler_from_env(settings, registry) is None
    upgrade(settings.database_url)
    monkeypatch.setenv("RESERVES_REPORTS_DIR", str(tmp_path / "reports"))
    engine = ReserveEngine(fakeredis.FakeAsyncRedis(decode_responses=True), settings)
    app = create_app(settings, engine=engine, config=ApiConfig(background_tasks=True))
    try:
        async with app.router.lifespan_context(app):
            for _ in range(300):  # the first pass, in a thread: up to 30 s on a busy machine
                if (tmp_path / "reports").exists() and len(
                        _files(tmp_path / "reports")) == 2 * ALL_DUE:
                    break
                await asyncio.sleep(0.1)
    finally:
        await engine.close()
    assert len(_files(tmp_path / "reports")) == 2 * ALL_DUE
    assert len({p.parent.name for p in (tmp_path / "reports").rglob("*.csv")}) == 3
