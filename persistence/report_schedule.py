"""Reports on a schedule: each daily, weekly and monthly report written once when its period
closes (plus limits.report_grace_s), as CSV and a self-contained HTML page, and optionally POSTed
to the alert webhooks (signed like the alerts).

    DIR/daily/2026-12-01.csv|.html     the UTC day that starts then
    DIR/weekly/2026-11-30.csv|.html    the ISO week (Monday 00:00 UTC) that starts then
    DIR/monthly/2026-11.csv|.html      the UTC calendar month

Exactly once: before writing, a process claims (period, start) in the `reports` table, whose
primary key lets one of several racing processes win; the files are written to a temporary
name and renamed (a reader never sees half a file); the row is then marked written, and a
written report is never claimed again (a restart does not rewrite). A claim whose process died
before finishing is taken over after limits.report_claim_lease_s. A process that was down when
periods closed writes, on its next run, the missed ones among the last
limits.report_catch_up_count_max of each kind.

Figures come from the ledger (balances as persisted at the end of the period), so a report
written later, or again after a lost claim, says the same. A report waits until the persister has
written every journal event before its period's end (its lag: the oldest event not yet persisted
is younger than the end), so a slow or stopped persister delays a report instead of leaving
events out of it for good.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from engine.config import Settings, env_flag
from engine.registry import CurrencyRegistry
from persistence import limits
from persistence.report import PERIODS, build_report, closed_periods, render_csv, row_values
from persistence.report_html import render_html
from persistence.store import Store, shared_engine

log = logging.getLogger("reserves.reports")

# The persister's lag totals (persistence.worker.Persister.lag()["total"]); None: unknown.
LagSource = Callable[[], dict[str, Any] | None]


def file_stem(period: str, start: datetime) -> str:
    """The report's path below the folder, without the extension: daily/2026-12-01."""
    start = start.astimezone(UTC)
    name = start.strftime("%Y-%m") if period == "monthly" else start.strftime("%Y-%m-%d")
    return f"{period}/{name}"


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary name beside path, flush to disk, rename over path."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class WrittenReport:
    period: str
    start: datetime
    end: datetime
    csv_path: Path
    html_path: Path
    payload: dict[str, Any]  # what is POSTed to the webhooks


class ReportScheduler:
    def __init__(self, database_url: str, registry: CurrencyRegistry, directory: Path | str,
                 periods: Sequence[str] = PERIODS, owner: str | None = None,
                 webhook_urls: Sequence[str] = (), webhook_secret: str = "",
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 interval_s: float = limits.report_check_interval_s,
                 lag_source: LagSource | None = None) -> None:
        assert all(p in PERIODS for p in periods), periods
        self.database_url = database_url
        self.registry = registry
        self.directory = Path(directory)
        self.periods = tuple(periods)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.webhook_urls = tuple(webhook_urls)
        self.webhook_secret = webhook_secret
        self.clock = clock
        self.interval_s = interval_s
        self.lag_source = lag_source  # None: no journal to wait for (the grace alone)

    def _store(self) -> Store:
        return Store(self.database_url, shared_engine(self.database_url))

    def due(self, now: datetime) -> list[tuple[str, datetime, datetime]]:
        """(period, start, end) of the closed periods to look at, oldest first per kind."""
        closed_by = now - timedelta(seconds=limits.report_grace_s)
        return [(period, start, end) for period in self.periods
                for start, end in closed_periods(period, closed_by,
                                                 limits.report_catch_up_count_max[period])]

    def persisted_until(self, now: datetime) -> datetime | None:
        """Every journal event before this time is in the ledger; None: the lag is unknown."""
        if self.lag_source is None:
            return now
        try:
            lag = self.lag_source()
        except Exception as exc:  # Redis away: the reports wait, the loop goes on
            log.warning("reports: the persister's lag is unavailable (%s): reports wait", exc)
            return None
        if lag is None:
            return None
        return now - timedelta(seconds=float(lag["oldest_unpersisted_age_s"]))

    def write_due(self, now: datetime | None = None) -> list[WrittenReport]:
        """Claim and write every due report no process has written; returns what this one
        wrote. Blocking (database and files)."""
        now = now or self.clock()
        persisted = self.persisted_until(now)
        if persisted is None:
            return []
        store = self._store()
        written = []
        for period, start, end in self.due(now):
            if end > persisted:
                log.info("the %s report of %s waits for the persister", period, start.date())
                continue
            if not store.claim_report(period, start, end, self.owner, now,
                                      limits.report_claim_lease_s):
                continue  # written, or being written, by another process (or an earlier run)
            report = self._write(period, start, end)
            if store.finish_report(period, start, self.owner, now,
                                   str(report.csv_path.with_suffix(""))):
                log.info("wrote the %s report of %s to %s", period, start.date(),
                         report.html_path)
                written.append(report)
            else:  # our claim lapsed and another process took it over: it reports
                log.warning("the %s report of %s was taken over by another process", period,
                            start.date())
        return written

    def _write(self, period: str, start: datetime, end: datetime) -> WrittenReport:
        report = build_report(self.database_url, self.registry, period, until=end)
        assert report.since == start, (report.since, start)
        stem = self.directory / file_stem(period, start)
        stem.parent.mkdir(parents=True, exist_ok=True)
        csv_text = render_csv(report)
        csv_path = stem.with_name(stem.name + ".csv")
        html_path = stem.with_name(stem.name + ".html")
        write_atomically(csv_path, csv_text)
        write_atomically(html_path, render_html(report))
        payload = {"type": "report", "period": period, "period_start": start.isoformat(),
                   "period_end": end.isoformat(), "files": [csv_path.name, html_path.name],
                   "figures": [row_values(f) for f in report.rows], "csv": csv_text}
        return WrittenReport(period, start, end, csv_path, html_path, payload)

    async def post(self, written: Sequence[WrittenReport]) -> None:
        """POST each report to the alert webhooks (signed, retried, as the alerts are)."""
        if not written or not self.webhook_urls:
            return
        from engine.monitoring.webhooks import WebhookSender

        sender = WebhookSender(self.webhook_urls, self.webhook_secret)
        sender.start()
        for report in written:
            sender.submit(report.payload)
        await sender.stop(deadline_s=limits.report_post_deadline_s)

    async def run_once(self, now: datetime | None = None) -> list[WrittenReport]:
        written = await asyncio.to_thread(self.write_due, now)
        await self.post(written)
        return written


def persister_lag(settings: Settings) -> LagSource:
    """The lag of the persister of this deployment's journal, read from Redis on each call."""
    reader: Any = None

    def read() -> dict[str, Any] | None:
        nonlocal reader
        if reader is None:
            from engine.connection import sync_client
            from persistence.worker import Persister

            reader = Persister(sync_client(settings), settings, settings.database_url,
                               store=Store(settings.database_url,
                                           shared_engine(settings.database_url)))
        total: dict[str, Any] = reader.lag()["total"]
        return total

    return read


def scheduler_from_env(settings: Settings, registry: CurrencyRegistry) -> ReportScheduler | None:
    """The served instance's scheduler: RESERVES_REPORTS_DIR (unset: none), and with
    RESERVES_REPORTS_WEBHOOK=1 the alert webhooks (RESERVES_ALERT_WEBHOOKS, ...)."""
    directory = os.environ.get("RESERVES_REPORTS_DIR", "").strip()
    if not directory:
        return None
    urls: tuple[str, ...] = ()
    secret = ""
    if env_flag("RESERVES_REPORTS_WEBHOOK"):
        from engine.monitoring.config import MonitorConfig

        config = MonitorConfig.from_env(registry)
        urls, secret = config.webhook_urls, config.webhook_secret
    return ReportScheduler(settings.database_url, registry, directory, webhook_urls=urls,
                           webhook_secret=secret, lag_source=persister_lag(settings))
