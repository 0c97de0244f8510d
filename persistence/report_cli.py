"""`reserves report --period daily|weekly [--format markdown|csv] [--out FILE] [--until TIME]`."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    report = subparsers.add_parser(
        "report", help="utilization, volume and top-ups per currency (Markdown or CSV)",
        description="Figures of the last day or week per currency, from the ledger "
        "(RESERVES_DATABASE_URL). Balances are the current ones from Redis when "
        "RESERVES_REDIS_URL is set and no --until is given, else the ledger's at the end of "
        "the period (only what the persister has written).")
    report.add_argument("--period", choices=["daily", "weekly"], required=True)
    report.add_argument("--format", choices=["markdown", "csv"], default="markdown")
    report.add_argument("--out", help="write to this file (default: standard output)")
    report.add_argument("--until", help="end of the period, ISO 8601 with a time zone, e.g. "
                        "2026-11-25T00:00+00:00 (default: now)")
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
    from persistence.generation import initialise_if_new
    from persistence.report import build_report, render

    settings = Settings.from_env()
    registry = CurrencyRegistry.load(settings.currencies_path)
    until = _until(args.until)
    try:
        balances = None
        if settings.redis_url is not None and until is None:
            service = ReserveService(settings=settings, registry=registry)
            initialise_if_new(service.client, settings)  # reserves never opened are opened
            balances = service.get_all_reserves()
        text = render(build_report(settings.database_url, registry, args.period, balances, until),
                      args.format)
    except ReserveError as exc:
        print(f"reserves report: {exc.message}", file=sys.stderr)
        return 1
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote the {args.period} report to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
