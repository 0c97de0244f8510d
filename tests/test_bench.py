"""The benchmark harness (benchmarks/): it runs a tiny plan end to end against the real Redis and
Postgres, and its invariant checks catch a deliberately broken engine. No timing is asserted:
only that the run completes, reports, and tells right from wrong."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from benchmarks import engine_bench, plan, runner
from benchmarks.stats import Cell
from engine.cli import build_parser
from engine.commands import Op
from engine.config import Settings
from engine.connection import async_client
from engine.engine import ReserveEngine
from engine.types import HoldResult, HoldState

pytestmark = pytest.mark.real


def test_tiny_run_reports_every_cell_and_passes_its_checks(
        redis_url: str, fresh_database_url: str, tmp_path: Path) -> None:
    tiny = plan.TINY
    cells, meta = runner.run(tiny, tmp_path, "pytest tiny", redis_url=redis_url,
                             database_url=fresh_database_url, progress=False)
    assert meta["skipped"] == {}
    by_scenario: dict[str, list[Cell]] = {}
    for cell in cells:
        by_scenario.setdefault(cell.scenario, []).append(cell)
    cells_count = len(tiny.cycles) * len(tiny.accounts_counts) * len(tiny.clients_counts)
    assert len(by_scenario["engine"]) == cells_count
    assert len(by_scenario["baseline"]) == cells_count
    assert len(by_scenario["persister"]) == 1
    for cell in cells:
        assert cell.ok, (cell.scenario, cell.label, cell.errors, cell.violations, cell.extra)
        assert cell.ops > 0
        assert cell.p50_ms <= cell.p99_ms <= cell.p999_ms
    persister = by_scenario["persister"][0].extra
    assert persister["reconcile_differences"] == 0
    assert persister["samples"], "the lag was sampled"
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["cells"]) == len(cells)
    assert {t["target"].split(" (")[0] for t in data["meta"]["targets"]} >= {
        "engine / Postgres baseline", "p99 of one reserve"}
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Targets" in text and "`pytest tiny`" in text
    assert "None: every cell passed its checks." in text


class OverReservingEngine(ReserveEngine):
    """Broken on purpose: every hold it grants also locks the whole balance behind the
    scripts' back (no check, no journal event), so the account is oversold."""

    async def run(self, op: Op[Any]) -> Any:
        result = await super().run(op)
        if isinstance(result, HoldResult) and result.applied and (
                result.hold.state is HoldState.pending):
            acct = self.ops.keys.account(result.hold.account.label).acct
            await self.client.hincrby(acct, "locked", result.balance.total_minor)
        return result


class FreeCommitEngine(ReserveEngine):
    """Broken on purpose: a commit hands the money back to the account afterwards, so the
    total no longer falls by what the callers saw committed."""

    async def commit_reserve(self, reference_id: str, amount: Any = None,
                             metadata: dict[str, Any] | None = None) -> HoldResult:
        result = await super().commit_reserve(reference_id, amount, metadata)
        acct = self.ops.keys.account(result.hold.account.label).acct
        await self.client.hincrby(acct, "total", result.hold.committed_minor)
        return result


def _broken_cell(redis_url: str, engine_type: type[ReserveEngine]) -> Cell:
    settings = replace(Settings(), redis_url=redis_url, key_prefix=f"tb{uuid.uuid4().hex[:10]}")
    spec = engine_bench.CellSpec(clients=4, accounts=1, cycle="commit", warmup_s=0.0,
                                 cell_s=0.2, balance_minor=10**9)

    def make(settings: Settings, batching: bool) -> ReserveEngine:
        return engine_type(async_client(settings), settings, batching=batching)

    return asyncio.run(engine_bench.run_cell(settings, spec, "broken", make_engine=make))


def test_checks_catch_an_engine_that_over_reserves(redis_url: str) -> None:
    cell = _broken_cell(redis_url, OverReservingEngine)
    assert not cell.ok
    assert any(v.startswith("oversold: RESERVE_USD_FIAT") for v in cell.violations)
    assert any(v.startswith("journal: RESERVE_USD_FIAT") for v in cell.violations)


def test_checks_catch_an_engine_that_commits_for_free(redis_url: str) -> None:
    cell = _broken_cell(redis_url, FreeCommitEngine)
    assert not cell.ok
    assert any(v.startswith("conservation: RESERVE_USD_FIAT total") for v in cell.violations)


def test_the_same_cell_with_the_real_engine_passes(redis_url: str) -> None:
    cell = _broken_cell(redis_url, ReserveEngine)
    assert cell.ok, cell.violations
    assert cell.ops > 0


def test_bench_command_and_plan_selection() -> None:
    args = build_parser().parse_args(["bench", "--quick", "--scenarios", "engine", "limit"])
    assert args.quick and args.scenarios == ["engine", "limit"]
    chosen = plan.select(plan.QUICK, ("limit", "engine"))
    assert chosen.scenarios == ("engine", "limit")  # in the harness's order
    with pytest.raises(ValueError, match="unknown scenario"):
        plan.select(plan.FULL, ("engine", "nope"))
    assert runner.steps_count(plan.TINY) == 8 + 8 + 1


def test_targets_take_the_median_of_the_back_to_back_rounds() -> None:
    """The ceiling ratio and the p99 come from the paired rounds when there are some: the
    median round, not the best or the last one; the scenario tables' cells are ignored."""
    from benchmarks.report import targets

    def cell(label: str, ops: int, p99_ms: float = 0.0) -> Cell:
        round_no, role = int(label.split()[1].rstrip(":")), label.split()[2].rstrip(",")
        return Cell("paired", label, 64, ops=ops, duration_s=1.0, reserve_p99_ms=p99_ms,
                    extra={"round": round_no, "role": role})

    cells = [Cell("engine", "commit cycle", 64, ops=1_000, duration_s=1.0, reserve_p99_ms=9.0),
             Cell("limit", "EVALSHA reserve.lua, -P 16", 64, ops=100_000, duration_s=1.0)]
    for i, (engine_ops, ceiling_ops, p99) in enumerate(
            [(30_000, 20_000, 3.0), (20_000, 40_000, 1.5), (36_000, 30_000, 2.5)], start=1):
        cells += [cell(f"round {i}: engine, commit cycle", engine_ops, p99),
                  cell(f"round {i}: ceiling, EVALSHA reserve.lua, -P 16", ceiling_ops)]
    by_name = {t["target"].split(" (")[0]: t for t in targets(cells)}
    ceiling = by_name["engine / redis-benchmark pipelined EVALSHA reserve.lua"]
    assert (ceiling["measured"], ceiling["met"]) == (1.2, True)  # ratios 1.5, 0.5, 1.2
    p99 = by_name["p99 of one reserve"]
    assert (p99["measured"], p99["met"]) == (2.5, False)


def test_the_instruction_counter_s_client_stub_runs_the_engine() -> None:
    """benchmarks/instructions.py counts the client stack with canned replies: the stub has to
    keep up with the engine's own calls (counted under callgrind by hand, not here)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "benchmarks.instructions", "_stub", "640"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("cache_max", "full"), [(50, True), (10**9, False)])
def test_the_long_running_cell_measures_with_the_caches_full(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, cache_max: int, full: bool) -> None:
    from engine import limits

    assert [s.warmup_s for label, s in engine_bench.cells(plan.FULL)
            if label == engine_bench.STEADY_LABEL] == [plan.FULL.steady_warmup_s]
    monkeypatch.setattr(limits, "hold_label_cache_max", cache_max)
    settings = replace(Settings(), redis_url=redis_url, key_prefix=f"tb{uuid.uuid4().hex[:10]}")
    spec = engine_bench.CellSpec(clients=4, accounts=1, cycle="commit", warmup_s=0.3,
                                 cell_s=0.2, balance_minor=10**9)
    cell = asyncio.run(engine_bench.run_cell(settings, spec, engine_bench.STEADY_LABEL))
    assert cell.ok, cell.violations
    assert cell.extra["hold_cache_full_at_measure"] is full
    if full:
        assert cell.extra["hold_cache_entries_at_measure"] == 50
        assert cell.label == engine_bench.STEADY_LABEL
    else:
        assert cell.label == f"{engine_bench.STEADY_LABEL} (caches not full yet)"
