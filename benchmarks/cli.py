"""`reserves bench`: the benchmark run of issue 6 (see benchmarks/RESULTS.md)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

EXIT_STATUS = """exit status:
  0  every cell ran and passed its invariant checks, even if a target was not met on this
     machine (the verdicts say met / not met / invalid)
  1  a cell failed its invariant checks, or a scenario could not run
  2  the run did not start: a prerequisite is missing (named, with the command that
     installs it), or the Redis URL cannot be given to redis-benchmark"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from benchmarks.plan import SCENARIOS

    bench = subparsers.add_parser(
        "bench", help="run the benchmarks against the real Redis and Postgres",
        description="Runs each scenario for a bounded time, checks its invariants, and writes\n"
        "RESULTS.md, results.json and latency.png. Redis and Postgres come from\n"
        "RESERVES_REDIS_URL / RESERVES_DATABASE_URL (default: 127.0.0.1); redis-benchmark\n"
        "is given the same host, port, database, credentials and TLS files.",
        epilog=EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--quick", action="store_true", help="fewer cells, shorter (minutes)")
    bench.add_argument("--out", type=Path, default=None,
                       help="where the results go (default: the current directory; the "
                       "committed results: --out benchmarks in the checkout)")
    bench.add_argument("--scenarios", nargs="+", choices=SCENARIOS, metavar="NAME",
                       help=f"only these: {', '.join(SCENARIOS)}")
    bench.add_argument("--own-redis", action="store_true",
                       help="start a private redis-server for the run instead of sharing one")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument("--render", action="store_true",
                       help="only write RESULTS.md again from OUT/results.json (and ANALYSIS.md)")
    bench.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    import logging

    from benchmarks import plan, prerequisites, report, runner

    for noisy in ("alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = args.out if args.out is not None else Path.cwd()
    if args.render:
        if not (out / "results.json").exists():  # the default moved from benchmarks/ to the cwd
            print(f"no results.json in {out}: give the run's folder with --out "
                  "(the committed run: --out benchmarks)", file=sys.stderr)
            return 2
        report.render(out)
        print(f"rendered {out / 'RESULTS.md'}")
        return 0
    chosen = plan.select(plan.QUICK if args.quick else plan.FULL,
                         tuple(args.scenarios) if args.scenarios else None)
    command = "reserves " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "reserves bench"
    try:
        cells, meta = runner.run(chosen, out, command, use_own_redis=args.own_redis,
                                 progress=not args.no_progress)
    except prerequisites.MissingPrerequisites as exc:
        print(exc, file=sys.stderr)
        return 2
    print(report.table(cells))
    for t in report.targets(cells):
        if t["verdict"] in ("met", "not met"):
            print(f"{t['target']}: {t['measured']} (want {t['wanted']}): {t['verdict'].upper()}")
        else:
            print(f"{t['target']}: {t['verdict'].upper()} ({t['detail']})")
    for name, reason in meta["skipped"].items():
        print(f"could not run {name}: {reason}", file=sys.stderr)
    print(f"results in {out / 'RESULTS.md'}")
    return exit_status(cells, meta)


def exit_status(cells: list[Any], meta: dict[str, Any]) -> int:
    """0 when every cell passed its checks and every scenario ran, whatever the verdicts; a
    target not met on this machine is a result, not an error (EXIT_STATUS)."""
    return 1 if any(not c.ok for c in cells) or meta["skipped"] else 0
