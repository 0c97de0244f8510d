"""`reserves bench`: the benchmark run of issue 6 (see benchmarks/RESULTS.md)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from benchmarks.plan import SCENARIOS

    bench = subparsers.add_parser(
        "bench", help="run the benchmarks against the real Redis and Postgres",
        description="Runs each scenario for a bounded time, checks its invariants, and writes "
        "RESULTS.md, results.json and latency.png. Redis and Postgres come from "
        "RESERVES_REDIS_URL / RESERVES_DATABASE_URL (default: 127.0.0.1).")
    bench.add_argument("--quick", action="store_true", help="fewer cells, shorter (minutes)")
    bench.add_argument("--out", type=Path, default=DEFAULT_OUT,
                       help=f"where the results go (default: {DEFAULT_OUT})")
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

    from benchmarks import plan, report, runner

    for noisy in ("alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.render:
        report.render(args.out)
        print(f"rendered {args.out / 'RESULTS.md'}")
        return 0
    chosen = plan.select(plan.QUICK if args.quick else plan.FULL,
                         tuple(args.scenarios) if args.scenarios else None)
    command = "reserves " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "reserves bench"
    cells, meta = runner.run(chosen, args.out, command, use_own_redis=args.own_redis,
                             progress=not args.no_progress)
    print(report.table(cells))
    for t in report.targets(cells):
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
        print(f"{t['target']}: {t['measured']} (want {t['wanted']}): {verdict}")
    for name, reason in meta["skipped"].items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    print(f"results in {args.out / 'RESULTS.md'}")
    failed = [c for c in cells if not c.ok]
    return 1 if failed or meta["skipped"] else 0
