"""`reserves report --period daily|weekly|monthly [--format markdown|csv|html] [--out FILE]
[--until TIME]`, and `reserves report --schedule --dir DIR [--once] [--post] [--period P]`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    report = subparsers.add_parser(
        "report", help="utilization, volume and top-ups per currency (Markdown, CSV, HTML), "
        "on demand or on a schedule",
        description="Figures of the last day, week or calendar month per currency, from the "
        "ledger (RESERVES_DATABASE_URL). Balances are the current ones from Redis when "
        "RESERVES_REDIS_URL is set and no --until is given, else the ledger's at the end of "
        "the period (only what the persister has written). With --schedule: write each daily, "
        "weekly and monthly report once when its period closes (UTC), as CSV and HTML under "
        "--dir, exactly once however many processes run it.")
    report.add_argument("--period", choices=["daily", "weekly", "monthly"],
                        help="required without --schedule; with it, only this period")
    report.add_argument("--format", choices=["markdown", "csv", "html"], default="markdown")
    report.add_argument("--out", help="write to this file (default: standard output)")
    report.add_argument("--until", help="end of the period, ISO 8601 with a time zone, e.g. "
                        "2026-11-25T00:00+00:00 (default: now)")
    report.add_argument("--schedule", action="store_true",
                        help="write the reports of closed periods into --dir, in a loop")
    report.add_argument("--dir", help="with --schedule: the reports folder "
                        "(DIR/daily/2026-12-01.csv|.html, weekly/..., monthly/2026-12.csv|.html)")
    report.add_argument("--once", action="store_true",
                        help="with --schedule: one pass, then exit (for cron)")
    report.add_argument("--post", action="store_true",
                        help="with --schedule: also POST each report to the alert webhooks "
                        "(RESERVES_ALERT_WEBHOOKS, signed with RESERVES_ALERT_WEBHOOK_SECRET)")
    report.set_defaults(func=_report)


def _until(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"reserves report: --until {raw!r} is not an ISO 8601 time") from None


def _report(args: argparse.Namespace) -> int:
    from engine.config import Settings
    from engine.errors import ReserveError
    from engine.registry import CurrencyRegistry
    from engine.service import ReserveService
    from persistence.report import build_report, render
    from persistence.report_html import render_html

    if args.schedule:
        return _schedule(args)
    if args.period is None:
        raise SystemExit("reserves report: --period is required (or --schedule)")
    if args.dir or args.once or args.post:
        raise SystemExit("reserves report: --dir, --once and --post go with --schedule")
    settings = Settings.from_env()
    registry = CurrencyRegistry.load(settings.currencies_path)
    until = _until(args.until)
    try:
        balances = None
        if settings.redis_url is not None and until is None:
            balances = ReserveService(settings=settings, registry=registry).get_all_reserves()
        report = build_report(settings.database_url, registry, args.period, balances, until)
        text = render_html(report) if args.format == "html" else render(report, args.format)
    except ReserveError as exc:
        print(f"reserves report: {exc.message}", file=sys.stderr)
        return 1
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote the {args.period} report to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from engine.config import Settings
    from engine.errors import ReserveError
    from engine.registry import CurrencyRegistry
    from persistence.report import PERIODS
    from persistence.report_schedule import ReportScheduler, persister_lag

    if not args.dir:
        raise SystemExit("reserves report: --schedule needs --dir DIR")
    if args.until or args.out or args.format != "markdown":
        raise SystemExit("reserves report: --until, --out and --format are for one report, "
                         "not --schedule")
    settings = Settings.from_env()
    registry = CurrencyRegistry.load(settings.currencies_path)
    urls: tuple[str, ...] = ()
    secret = ""
    if args.post:
        from engine.monitoring.config import MonitorConfig

        config = MonitorConfig.from_env(registry)
        if not config.webhook_urls:
            raise SystemExit("reserves report: --post needs RESERVES_ALERT_WEBHOOKS (or "
                             "RESERVES_ALERT_CONFIG)")
        urls, secret = config.webhook_urls, config.webhook_secret
    scheduler = ReportScheduler(settings.database_url, registry, args.dir,
                                periods=(args.period,) if args.period else PERIODS,
                                webhook_urls=urls, webhook_secret=secret,
                                lag_source=persister_lag(settings))
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread() and not args.once:
        def on_term(_signum: int, _frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_term)
    try:
        while True:
            try:
                written = asyncio.run(scheduler.run_once())
            except ReserveError as exc:
                print(f"reserves report: {exc.message}", file=sys.stderr)
                if args.once:
                    return 1
                written = []
            for w in written:
                print(f"wrote the {w.period} report of {w.start.date()} to {w.csv_path} and "
                      f"{w.html_path.name}", file=sys.stderr)
            if args.once or stop.wait(scheduler.interval_s):
                return 0
    except KeyboardInterrupt:
        return 0
