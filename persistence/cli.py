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

    audit = subparsers.add_parser(
        "audit", help="print the audit log (newest first) as a table",
        description="Every change and every refused change, from the database (the filters "
        "and paging of GET /wallet/reserves/audit).")
    audit.add_argument("--actor", help="the token's identity")
    audit.add_argument("--action", help="an action (e.g. reserve_topup) and its refusals")
    audit.add_argument("--outcome", choices=["applied", "refused"])
    audit.add_argument("--reference")
    audit.add_argument("--since-ms", type=int, help="created at or after (ms since the epoch)")
    audit.add_argument("--until-ms", type=int, help="created before (ms since the epoch)")
    audit.add_argument("--before", type=int, help="only entries below this event id (paging)")
    audit.add_argument("--limit", type=int, default=limits.audit_page_default,
                       help=f"entries (1 to {limits.audit_page_max}, default "
                            f"{limits.audit_page_default})")
    audit.set_defaults(func=_audit)


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


AUDIT_COLUMNS = ("event_id", "time", "actor", "role", "ip", "action", "route", "reference",
                 "outcome", "status", "code")


def _audit(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from engine.config import Settings
    from persistence.audit import audit_entries
    from persistence.store import AuditQuery

    if not 1 <= args.limit <= limits.audit_page_max:
        print(f"--limit must be from 1 to {limits.audit_page_max}", file=sys.stderr)
        return 2
    query = AuditQuery(limit=args.limit, actor=args.actor, action=args.action,
                       outcome=args.outcome, reference=args.reference, since_ms=args.since_ms,
                       until_ms=args.until_ms, before_event_id=args.before)
    entries = audit_entries(Settings.from_env().database_url, query)
    rows = [[str(e["event_id"]),
             datetime.fromtimestamp(e["created_ms"] / 1000, UTC).isoformat(timespec="milliseconds"),
             *("" if e[c] is None else str(e[c]) for c in AUDIT_COLUMNS[2:])] for e in entries]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(AUDIT_COLUMNS)]
    for line in [list(AUDIT_COLUMNS), *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    if len(entries) == args.limit:
        print(f"(more: --before {entries[-1]['event_id']})")
    return 0
