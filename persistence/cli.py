"""Subcommands of the persistence layer: migrate, persist, rebuild, reconcile, lag."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from persistence import limits


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    migrate = subparsers.add_parser("migrate", help="apply the database migrations")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.add_argument("--downgrade", action="store_true",
                         help="downgrade to --revision (e.g. base) instead of upgrading")
    migrate.set_defaults(func=_migrate)

    persist = subparsers.add_parser(
        "persist", help="move journal events from Redis into the database until SIGTERM")
    persist.add_argument("--consumer", default=None, help="consumer name (default: host-pid)")
    persist.add_argument("--batch-count", type=int, default=limits.batch_count_max,
                         help=f"entries per stream per batch (default {limits.batch_count_max})")
    persist.add_argument("--claim-idle-ms", type=int, default=limits.claim_idle_ms,
                         help="reclaim other consumers' entries idle this long")
    persist.set_defaults(func=_persist)

    rebuild = subparsers.add_parser(
        "rebuild", help="restore Redis balances and open holds from the database")
    rebuild.add_argument("--force", action="store_true",
                         help="overwrite accounts that still exist in Redis")
    rebuild.set_defaults(func=_rebuild)

    reconcile = subparsers.add_parser(
        "reconcile", help="compare Redis balances with the ledger; exit 1 on any difference")
    reconcile.set_defaults(func=_reconcile)

    lag = subparsers.add_parser("lag", help="journal lag of the persister, as JSON")
    lag.set_defaults(func=_lag)


def _context() -> tuple[Any, Any]:
    from engine.config import Settings
    from engine.connection import sync_client

    settings = Settings.from_env()
    if settings.redis_url is None:
        print("RESERVES_REDIS_URL is not set: the embedded fakeredis lives inside "
              "`reserves serve`, which persists by itself", file=sys.stderr)
        raise SystemExit(2)
    return settings, sync_client(settings)


def _migrate(args: argparse.Namespace) -> int:
    from engine.config import Settings
    from persistence import migrate

    url = Settings.from_env().database_url
    if args.downgrade:
        migrate.downgrade(url, args.revision)
    else:
        migrate.upgrade(url, args.revision)
    print(f"database at revision {migrate.current_revision(url)}")
    return 0


def _persist(args: argparse.Namespace) -> int:
    from persistence.worker import Persister

    settings, client = _context()
    persister = Persister(client, settings, settings.database_url, args.consumer,
                          batch_count_max=args.batch_count, claim_idle_ms=args.claim_idle_ms)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    persister.run(stop)
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    from persistence.rebuild import RebuildRefused, rebuild

    settings, client = _context()
    try:
        report = rebuild(client, settings, settings.database_url, force=args.force)
    except RebuildRefused as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(f"restored {report.accounts_count} accounts, {report.pending_holds_count} pending holds, "
          f"{report.ended_holds_count} ended holds, {report.transfers_count} transfer records, "
          f"{report.flows_count} flow records")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from persistence.reconcile import reconcile
    from persistence.worker import Persister

    settings, client = _context()
    lag = Persister(client, settings, settings.database_url).lag()["total"]
    if lag["pending"] or lag["unread"]:
        print(f"note: {lag['pending'] + lag['unread']} journal events are not persisted yet; "
              "they show up as differences", file=sys.stderr)
    differences = reconcile(client, settings, settings.database_url)
    for difference in differences:
        print(difference)
    print(f"{len(differences)} difference(s)")
    return 1 if differences else 0


def _lag(args: argparse.Namespace) -> int:
    from persistence.worker import Persister

    settings, client = _context()
    print(json.dumps(Persister(client, settings, settings.database_url).lag(), indent=2))
    return 0
