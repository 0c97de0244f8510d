"""Scenario 1: reserve -> commit and reserve -> release cycles through the asyncio engine.

Each cell runs under a fresh key prefix: its accounts are opened and topped up, `clients`
coroutines run cycles until the deadline (latencies kept after the warm-up), and then the
invariants are checked against what the callers saw (benchmarks/invariants.py)."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from benchmarks import invariants
from benchmarks.stats import Cell
from engine.batching import BatchingDriver
from engine.config import Settings
from engine.connection import async_client, sync_client
from engine.engine import ReserveEngine
from engine.errors import ReserveError
from engine.ops import AccountSpec

EngineFactory = Callable[[Settings, bool], ReserveEngine]
SETUP_CONCURRENCY_MAX = 64
FIRST_ERRORS_MAX = 3


STEADY_LABEL = "commit cycle, long-running"


def default_engine(settings: Settings, batching: bool) -> ReserveEngine:
    return ReserveEngine(async_client(settings), settings, batching=batching)


@dataclass
class CellSpec:
    clients: int
    accounts: int
    cycle: str  # "commit" | "release"
    warmup_s: float
    cell_s: float
    balance_minor: int
    batching: bool = True
    check_journal: bool = True  # off while a persister trims the streams
    keep_keys: bool = False  # the persister scenario reconciles them after the cell


@dataclass
class _Tally:
    committed_minor: dict[str, int] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)
    latencies_ns: list[int] = field(default_factory=list)
    reserve_ns: list[int] = field(default_factory=list)
    measured_ops: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)


def account_specs(engine: ReserveEngine, count: int) -> list[AccountSpec]:
    if count == 1:  # the hot account: one reserve everybody uses
        return [engine.ops.reserve_spec("USD", "fiat")]
    return [engine.ops.user_spec(f"b{i}", "USD") for i in range(count)]


async def open_accounts(engine: ReserveEngine, specs: list[AccountSpec],
                        balance_minor: int) -> None:
    gate = asyncio.Semaphore(SETUP_CONCURRENCY_MAX)

    async def one(spec: AccountSpec) -> None:
        async with gate:
            await engine.run(engine.ops.top_up(spec, balance_minor, f"seed-{spec.label}"))

    # one call first: a cluster client reads the slot map on it, not under 64 coroutines at once
    await one(specs[0])
    await asyncio.gather(*(one(spec) for spec in specs[1:]))


async def _client(engine: ReserveEngine, index: int, spec: CellSpec, specs: list[AccountSpec],
                  measure_from_ns: int, end_ns: int, tally: _Tally) -> None:
    """Cycles until end_ns. Its counts stay in locals and reach the tally at the end: the loop
    shares the cores with the engine it measures, so it does as little as it can."""
    n = locks = ends = 0
    clock = time.perf_counter_ns
    commit = spec.cycle == "commit"
    reserve, commit_reserve, release_reserve = (engine.ops.reserve, engine.commit_reserve,
                                                engine.release_reserve)
    run = engine.run
    committed_minor: dict[str, int] = dict.fromkeys((s.label for s in specs), 0)
    latencies, reserve_ns = tally.latencies_ns, tally.reserve_ns
    clients, accounts_count = spec.clients, len(specs)
    try:
        while True:
            start = clock()
            if start >= end_ns:
                return
            account = specs[(index + n * clients) % accounts_count]
            ref = f"c{index}-{n}"
            n += 1
            try:
                held = await run(reserve(account, 1, ref, "bench"))
                middle = clock()
                ended = await (commit_reserve(ref) if commit else release_reserve(ref))
                stop = clock()
            except Exception as exc:  # refused or broken: a failure here either way (ample balance)
                tally.errors += 1
                if len(tally.first_errors) < FIRST_ERRORS_MAX:
                    message = exc.message if isinstance(exc, ReserveError) else str(exc)
                    tally.first_errors.append(f"{type(exc).__name__}: {message}")
                continue
            locks += held.applied
            ends += ended.applied
            committed_minor[account.label] += ended.hold.committed_minor
            if start >= measure_from_ns:
                tally.measured_ops += 2
                latencies.append(middle - start)
                latencies.append(stop - middle)
                reserve_ns.append(middle - start)
    finally:
        end_op = "reserve_commit" if commit else "reserve_release"
        tally.applied["reserve_lock"] = tally.applied.get("reserve_lock", 0) + locks
        tally.applied[end_op] = tally.applied.get(end_op, 0) + ends
        for label, amount in committed_minor.items():
            tally.committed_minor[label] = tally.committed_minor.get(label, 0) + amount


def _note_cache_fill(engine: ReserveEngine, cell: Cell) -> None:
    labels = engine.ops._hold_labels
    cell.extra["hold_cache_entries_at_measure"] = len(labels)
    cell.extra["hold_cache_full_at_measure"] = len(labels) >= labels.max_count
    if cell.label == STEADY_LABEL and len(labels) < labels.max_count:
        cell.label += " (caches not full yet)"  # a slow host: say so rather than mislabel


def _redis_cpu_s(client: Any) -> float:
    try:
        info = client.info("cpu")
    except Exception:  # a cluster client answers per node: not measured there
        return 0.0
    if "used_cpu_user" not in info:
        return 0.0
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def run_cell(settings: Settings, spec: CellSpec, label: str, scenario: str = "engine",
                   make_engine: EngineFactory = default_engine) -> Cell:
    """One measured cell under settings.key_prefix (which must be fresh)."""
    engine = make_engine(settings, spec.batching)
    sync = sync_client(settings)
    cell = Cell(scenario, label, spec.clients, spec.accounts)
    try:
        specs = account_specs(engine, spec.accounts)
        await open_accounts(engine, specs, spec.balance_minor)
        keys = engine.ops.keys
        labels = [s.label for s in specs]
        before = invariants.balances(sync, keys, labels)
        tally = _Tally()
        # As `reserves serve` does after start-up (RESERVES_GC_FREEZE): what this process built
        # before the load is out of the collector's walks, which would otherwise go over all of
        # it (50-80 ms each, several a second) as the callers' in-flight objects age into the
        # oldest generation. Given back to the collector after the cell.
        gc.collect()
        gc.freeze()
        # how full the reference cache is when the measured window opens
        asyncio.get_running_loop().call_later(spec.warmup_s, _note_cache_fill, engine, cell)
        start_ns = time.perf_counter_ns()
        measure_from_ns = start_ns + int(spec.warmup_s * 1e9)
        end_ns = measure_from_ns + int(spec.cell_s * 1e9)
        cpu_start, redis_cpu_start = os.times(), _redis_cpu_s(sync)
        await asyncio.gather(*(
            _client(engine, i, spec, specs, measure_from_ns, end_ns, tally)
            for i in range(spec.clients)))
        finished_ns = time.perf_counter_ns()
        cpu_end = os.times()
        cell.extra["client_user_s"] = round(cpu_end.user - cpu_start.user, 3)
        cell.extra["client_sys_s"] = round(cpu_end.system - cpu_start.system, 3)
        cell.extra["client_cpu_s"] = round(cell.extra["client_user_s"] + cell.extra["client_sys_s"],
                                           3)
        cell.extra["redis_cpu_s"] = round(_redis_cpu_s(sync) - redis_cpu_start, 3)
        cell.extra["wall_s"] = round((finished_ns - start_ns) / 1e9, 3)
        cell.extra["load_1m"] = round(os.getloadavg()[0], 2)  # the machine is shared
        cell.ops = tally.measured_ops
        cell.duration_s = max(1e-9, (finished_ns - measure_from_ns) / 1e9)
        cell.errors = tally.errors
        if tally.first_errors:
            cell.extra["first_errors"] = tally.first_errors
        if isinstance(engine.driver, BatchingDriver) and engine.driver.batches_count:
            cell.extra["ops_per_batch"] = round(
                engine.driver.batched_ops_count / engine.driver.batches_count, 1)
        cell.set_latencies(tally.latencies_ns, tally.reserve_ns)
        after = invariants.balances(sync, keys, labels)
        cell.violations += invariants.check_balances(before, after, tally.committed_minor, {})
        if spec.check_journal:
            tally.applied["reserve_topup"] = len(specs)
            cell.violations += invariants.check_journal(sync, keys, after, tally.applied)
        return cell
    finally:
        gc.unfreeze()
        await engine.close()
        # a client built on an explicit pool leaves the pool open on close
        pool = getattr(engine.client, "connection_pool", None)
        if pool is not None:
            await pool.disconnect()
        if not spec.keep_keys:
            invariants.delete_prefix(sync, settings.key_prefix)
        sync.close()


def cells(plan: Any) -> list[tuple[str, CellSpec]]:
    """The engine scenario's cells: every cycle x accounts x clients, then batching off."""
    out = []
    for cycle in plan.cycles:
        for accounts in plan.accounts_counts:
            for clients in plan.clients_counts:
                out.append((f"{cycle} cycle", CellSpec(clients, accounts, cycle, plan.warmup_s,
                                                       plan.cell_s, plan.balance_minor)))
    for clients in plan.unbatched_clients_counts:
        out.append(("commit cycle, batching off", CellSpec(
            clients, 1, "commit", plan.warmup_s, plan.cell_s, plan.balance_minor,
            batching=False)))
    for clients in plan.steady_clients_counts:
        out.append((STEADY_LABEL, CellSpec(clients, 1, "commit", plan.steady_warmup_s,
                                           plan.cell_s, plan.balance_minor)))
    return out


def run(settings: Settings, plan: Any, tick: Callable[[str], None],
        make_engine: EngineFactory = default_engine, run_async: Any = asyncio.run) -> list[Cell]:
    results = []
    for i, (label, spec) in enumerate(cells(plan)):
        tick(f"engine: {label}, {spec.clients} clients, {spec.accounts} account(s)")
        cell_settings = replace(settings, key_prefix=f"{settings.key_prefix}e{i}")
        results.append(run_async(run_cell(cell_settings, spec, label, make_engine=make_engine)))
    return results
