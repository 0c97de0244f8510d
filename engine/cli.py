"""The `reserves` command. Each layer adds its own subcommands through a `register(subparsers)`
function in its cli module, so that the engine does not import the layers above it."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence

from engine import LOG_FORMAT

# Modules that add subcommands; a layer not installed yet is skipped.
COMMAND_MODULES = ("engine.cli", "persistence.cli", "persistence.report_cli", "api.cli",
                   "benchmarks.cli")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sweep = subparsers.add_parser("sweep", help="end holds past their TTL and prune old records once")
    sweep.set_defaults(func=_sweep)
    balances = subparsers.add_parser("balances", help="print every reserve's balance")
    balances.set_defaults(func=_balances)


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
    from engine.money import json_number
    from engine.service import ReserveService

    service = ReserveService()
    print(f"{'reserve':<22} {'total':>22} {'available':>22} {'locked':>22} {'util%':>7}  status")
    for b in service.get_all_reserves():
        print(f"{b.account.label:<22} {json_number(b.major(b.total_minor)):>22} "
              f"{json_number(b.major(b.available_minor)):>22} "
              f"{json_number(b.major(b.locked_minor)):>22} {b.utilization_percentage:>7}  {b.status}")
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
