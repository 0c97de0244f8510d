"""One benchmark run: every scenario of the plan in turn, a progress bar, then the report."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import engine_bench, prerequisites, report, services
from benchmarks import plan as plans
from benchmarks.stats import Cell
from engine.config import Settings

T = TypeVar("T")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PROFILE_TOP_COUNT = 15


def run_async_factory() -> tuple[Callable[[Coroutine[Any, Any, T]], T], str]:
    """asyncio.run on uvloop when it is installed (the `bench` extra), else the default loop."""
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
        name = f"uvloop {uvloop.__version__}"
    except ImportError:
        factory, name = None, "asyncio"

    def run_async(coro: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    return run_async, name


@dataclass
class Context:
    settings: Settings
    database_url: str
    run_id: str
    plan: plans.Plan
    tick: Callable[[str], None]
    run_async: Callable[[Coroutine[Any, Any, Any]], Any]
    skipped: dict[str, str] = field(default_factory=dict)
    profile: dict[str, Any] | None = None


@contextmanager
def own_redis() -> Iterator[str]:
    """A private redis-server (no persistence) for a run that should not share its Redis."""
    with services.redis_server() as url:
        yield url


def machine(settings: Settings, database_url: str, loop_name: str) -> dict[str, str]:
    import hiredis
    import psycopg
    import redis

    from engine.connection import sync_client

    info: dict[str, str] = {}
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["cores"] = f"{os.cpu_count()} ({model or platform.processor()})"
    info["load average at start (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    info["Python"] = f"{platform.python_version()} ({loop_name}, redis-py {redis.__version__}, "\
                     f"hiredis {hiredis.__version__}, psycopg {psycopg.__version__})"
    client = sync_client(settings)
    try:
        server = client.info("server")
        persistence = client.info("persistence")
        info["Redis"] = (f"{server.get('redis_version')} at "
                         f"{prerequisites.safe_url(settings.redis_url or '')} "
                         f"(appendonly {'yes' if persistence.get('aof_enabled') else 'no'})")
    finally:
        client.close()
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(database_url)
        with engine.connect() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar_one()
            sync_commit = conn.execute(sa.text("SHOW synchronous_commit")).scalar_one()
        engine.dispose()
        info["Postgres"] = f"{version} (synchronous_commit {sync_commit})"
    except Exception as exc:  # reported, the run goes on without it
        info["Postgres"] = f"unreachable ({type(exc).__name__})"
    info["OS"] = platform.platform()
    return info


def _profile_cell(ctx: Context) -> None:
    """The engine at 64 clients on the hot account again, under py-spy (sampling this process)."""
    py_spy = prerequisites.py_spy()
    if ctx.plan.profile_s <= 0 or py_spy is None:
        return
    ctx.tick("profile: engine, 64 clients, hot account, under py-spy")
    out = Path(tempfile.mkdtemp(prefix="reserves-bench-prof-")) / "raw.txt"
    spec = engine_bench.CellSpec(64, 1, "commit", 0.0, ctx.plan.profile_s, ctx.plan.balance_minor)
    proc = subprocess.Popen([py_spy, "record", "--pid", str(os.getpid()), "--duration",
                             str(max(1, round(ctx.plan.profile_s))), "--rate", "250",
                             "--format", "raw", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # py-spy attaches (its few lines of output fit the pipe)
    settings = replace(ctx.settings, key_prefix=f"{ctx.settings.key_prefix}prof")
    cell = ctx.run_async(engine_bench.run_cell(settings, spec, "profiled"))
    try:
        _, err_bytes = proc.communicate(timeout=ctx.plan.profile_s + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err_bytes = proc.communicate()
    if not out.exists():
        err = err_bytes.decode() if err_bytes else ""
        ctx.profile = {"summary": f"py-spy produced nothing: {err.strip()[:300]}", "top": []}
        return
    ctx.profile = summarise_profile(out.read_text(), cell)
    shutil.rmtree(out.parent, ignore_errors=True)


def summarise_profile(raw: str, cell: Cell) -> dict[str, Any]:
    """Self time per frame, and the share per layer (idle loop, redis-py, engine, harness)."""
    self_counts: dict[str, int] = {}
    layers = {"event loop idle / uvloop internals": 0, "redis-py + hiredis (encode, parse, I/O)": 0,
              "engine (ops, batching, drivers)": 0, "asyncio": 0, "benchmark harness": 0,
              "other": 0}
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        leaf = stack.split(";")[-1]
        self_counts[leaf] = self_counts.get(leaf, 0) + count
        if leaf.startswith("Runner.run ") or "run_forever" in leaf:
            layers["event loop idle / uvloop internals"] += count
        elif "/redis/" in leaf or "redis/" in leaf.split("(")[-1]:
            layers["redis-py + hiredis (encode, parse, I/O)"] += count
        elif "engine/" in leaf:
            layers["engine (ops, batching, drivers)"] += count
        elif "asyncio/" in leaf:
            layers["asyncio"] += count
        elif "benchmarks/" in leaf:
            layers["benchmark harness"] += count
        else:
            layers["other"] += count
    total = max(total, 1)
    top = sorted(self_counts.items(), key=lambda kv: -kv[1])[:PROFILE_TOP_COUNT]
    split = ", ".join(f"{name} {100 * n / total:.0f} %" for name, n in layers.items() if n)
    summary = (f"{total} samples of the process while it ran {cell.ops_per_s:,.0f} ops/s "
               f"(client CPU {cell.extra.get('client_cpu_s')} s, Redis CPU "
               f"{cell.extra.get('redis_cpu_s')} s in {cell.extra.get('wall_s')} s of wall time). "
               f"Self time by layer: {split}.")
    return {"summary": summary, "layers": {k: round(100 * v / total, 1) for k, v in layers.items()},
            "top": [(100 * n / total, frame) for frame, n in top]}


def _scenario(ctx: Context, name: str) -> list[Cell]:
    """One scenario's cells; what it needs was checked before the run (prerequisites.py)."""
    from benchmarks import baseline, cluster_bench, http_bench, limit, paired, persister_bench

    s, p = ctx.settings, ctx.plan
    if name == "engine":
        cells = engine_bench.run(s, p, ctx.tick, run_async=ctx.run_async)
        _profile_cell(ctx)
        return cells
    if name == "baseline":
        return baseline.run(ctx.database_url, ctx.run_id, p, ctx.tick, run_async=ctx.run_async)
    if name == "limit":
        return limit.run(s, p, ctx.tick)
    if name == "http":
        return http_bench.run(s, ctx.database_url, p, ctx.tick)
    if name == "persister":
        return persister_bench.run(s, ctx.database_url, ctx.run_id, p, ctx.tick,
                                   run_async=ctx.run_async)
    if name == "paired":
        return paired.run(s, p, ctx.tick, ctx.run_async)
    if name == "cluster":
        return cluster_bench.run(s, p, ctx.tick, run_async=ctx.run_async)
    raise ValueError(name)


def steps_count(p: plans.Plan) -> int:
    count = 0
    if "engine" in p.scenarios:
        count += len(engine_bench.cells(p)) + (1 if p.profile_s > 0 else 0)
    cells = len(p.cycles) * len(p.accounts_counts) * len(p.clients_counts)
    count += cells if "baseline" in p.scenarios else 0
    count += 4 * len(p.clients_counts) if "limit" in p.scenarios else 0
    count += (len(p.http_workers_counts) * len(p.http_clients_counts)
              if "http" in p.scenarios else 0)
    count += 1 if "persister" in p.scenarios else 0
    count += len(p.cluster_masters_counts) if "cluster" in p.scenarios else 0
    count += 2 * p.paired_rounds if "paired" in p.scenarios else 0
    return count


def run(p: plans.Plan, out_dir: Path | None, command: str, redis_url: str | None = None,
        database_url: str | None = None, use_own_redis: bool = False,
        progress: bool = True) -> tuple[list[Cell], dict[str, Any]]:
    """Every scenario of the plan; raises prerequisites.MissingPrerequisites before the first
    cell when something the plan needs is missing. meta["skipped"]: the scenarios that could
    not run (an exception), with why."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    redis_url = redis_url or os.environ.get("RESERVES_REDIS_URL") or DEFAULT_REDIS_URL
    database_url = database_url or os.environ.get("RESERVES_DATABASE_URL") or DEFAULT_DATABASE_URL
    prerequisites.check(p, redis_url, database_url, use_own_redis)
    run_id = f"bench{int(time.time())}{os.getpid() % 10000}"
    run_async, loop_name = run_async_factory()
    started = time.monotonic()
    with (own_redis() if use_own_redis else _given(redis_url)) as url:
        settings = replace(Settings(), redis_url=url, database_url=database_url,
                           key_prefix=run_id, batching=True)
        meta: dict[str, Any] = {"command": command, "plan": p.name, "run_id": run_id,
                                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                "machine": machine(settings, database_url, loop_name)}
        cells: list[Cell] = []
        with Progress(TextColumn("{task.description:<64}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                      disable=not progress) as bar:
            task = bar.add_task("starting", total=steps_count(p))
            first = [True]

            def tick(description: str) -> None:
                if not first[0]:
                    bar.advance(task)
                first[0] = False
                bar.update(task, description=description)

            ctx = Context(settings, database_url, run_id, p, tick, run_async)
            for name in p.scenarios:
                try:
                    cells += _scenario(ctx, name)
                except Exception as exc:  # one broken scenario must not hide the others
                    ctx.skipped[name] = f"failed: {type(exc).__name__}: {exc}"
            bar.advance(task)
            bar.update(task, description="done")
        meta["machine"]["load average at end (1/5/15 min)"] = " / ".join(
            f"{x:.2f}" for x in os.getloadavg())
        meta["skipped"] = ctx.skipped
        meta["duration_s"] = time.monotonic() - started
        if out_dir is not None:
            report.write(out_dir, cells, meta, ctx.profile)
        return cells, meta


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url
