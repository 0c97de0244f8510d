"""The `reserves` command. Each layer adds its own subcommands through a `register(subparsers)`
function in its cli module, so that the engine does not import the layers above it."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from engine import LOG_FORMAT

# Modules that add subcommands; a layer not installed yet is skipped.
COMMAND_MODULES = ("engine.cli", "persistence.cli", "persistence.report_cli", "api.cli",
                   "benchmarks.cli")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sweep = subparsers.add_parser("sweep", help="end holds past their TTL and prune old records once")
    sweep.set_defaults(func=_sweep)
    balances = subparsers.add_parser(
        "balances", help="print every reserve's balance",
        description="Read from RESERVES_REDIS_URL, or with --url from a running `reserves serve` "
        "over its HTTP API (the only way to read the embedded default's store, which lives "
        "inside the serving process).")
    add_remote_arguments(balances)
    balances.set_defaults(func=_balances)


EMBEDDED_REFUSAL = ("no RESERVES_REDIS_URL: the embedded store lives inside the `reserves serve` "
                    "process; pass --url/--token to {what} over HTTP")


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="a running `reserves serve`, e.g. http://127.0.0.1:3000")
    parser.add_argument("--token", help="its admin token (default: RESERVES_ADMIN_TOKEN)")


class RemoteError(Exception):
    """A served instance could not be asked, or refused: the message says why."""


def remote_json(args: argparse.Namespace, method: str, path: str,
                body: dict[str, object] | None = None) -> dict[str, object]:
    """One admin call to the served instance at --url; its JSON (amounts as Decimal)."""
    import json
    import os
    from decimal import Decimal

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request on stderr
    token = args.token or os.environ.get("RESERVES_ADMIN_TOKEN")
    if not token:
        raise RemoteError("--url needs an admin token: --token or RESERVES_ADMIN_TOKEN")
    url = args.url.rstrip("/") + path
    try:
        response = httpx.request(method, url, json=body, timeout=10.0,
                                 headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise RemoteError(f"cannot reach {url}: {exc}") from None
    try:
        data = json.loads(response.text, parse_float=Decimal)
    except ValueError:
        raise RemoteError(f"{url} answered {response.status_code} without JSON") from None
    if response.status_code != 200:
        raise RemoteError(f"{url} answered {response.status_code}: {data.get('error')}")
    assert isinstance(data, dict)
    return data


def _sweep(args: argparse.Namespace) -> int:
    from engine.engine import ReserveEngine

    async def run() -> None:
        engine = ReserveEngine.from_settings()
        result = await engine.sweep()
        print(f"expired {result.expired_count} holds, pruned {result.pruned_count} records "
              f"over {result.accounts_count} accounts")
        await engine.close()

    asyncio.run(run())
    return 0


def _balances(args: argparse.Namespace) -> int:
    from engine.config import Settings
    from engine.money import json_number
    from engine.service import ReserveService

    rows: list[tuple[str, Any, Any, Any, Any, str]] = []
    if args.url:
        try:
            data = remote_json(args, "GET", "/wallet/reserves/status")
        except RemoteError as exc:
            print(f"reserves balances: {exc}", file=sys.stderr)
            return 1
        reserves: Any = data["reserves"]
        for account_type in ("crypto", "fiat"):
            for code, r in reserves.get(account_type, {}).items():
                rows.append((f"RESERVE_{code}_{account_type.upper()}", r["total_balance"],
                             r["available_balance"], r["locked_balance"],
                             r["utilization_percentage"], r["status"]))
    elif Settings.from_env().redis_url is None:
        # The CLI's own fakeredis would be empty: zeros that look like an answer.
        print(f"reserves balances: {EMBEDDED_REFUSAL.format(what='read it')}", file=sys.stderr)
        return 2
    else:
        for b in ReserveService().get_all_reserves():
            rows.append((b.account.label, b.major(b.total_minor), b.major(b.available_minor),
                         b.major(b.locked_minor), b.utilization_percentage, b.status))
    print(f"{'reserve':<22} {'total':>22} {'available':>22} {'locked':>22} {'util%':>7}  status")
    for label, total, available, locked, utilization, status in rows:
        print(f"{label:<22} {json_number(total):>22} {json_number(available):>22} "
              f"{json_number(locked):>22} {utilization:>7}  {status}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reserves",
        description="Redis-native reservation engine for wallet liquidity reserves. "
        "Configuration comes from RESERVES_* environment variables (see README).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=LOG_FORMAT,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
