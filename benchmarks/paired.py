"""The targets' two cells measured back to back, several rounds: the engine at 64 clients on
the hot account (reserve -> commit) and redis-benchmark's pipelined EVALSHA of reserve.lua at
64 clients, the ceiling it is divided by.

On a shared 2-core machine the speed of everything drifts by tens of percent within one run
(the load column of RESULTS.md shows it), and the scenario tables measure the two cells minutes
apart. Here each round measures both within seconds, so each round's ratio compares like with
like; the verdicts take the median round, and RESULTS.md shows every round."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from benchmarks import engine_bench, limit
from benchmarks.stats import Cell
from engine.config import Settings

CLIENTS = 64


def run(settings: Settings, plan: Any, tick: Callable[[str], None],
        run_async: Callable[[Any], Any]) -> list[Cell]:
    cells: list[Cell] = []
    for round_no in range(1, plan.paired_rounds + 1):
        tick(f"paired: round {round_no} of {plan.paired_rounds}, engine")
        spec = engine_bench.CellSpec(CLIENTS, 1, "commit", plan.warmup_s, plan.paired_cell_s,
                                     plan.balance_minor)
        engine_settings = replace(settings, key_prefix=f"{settings.key_prefix}pe{round_no}")
        engine = run_async(engine_bench.run_cell(
            engine_settings, spec, f"round {round_no}: engine, commit cycle", scenario="paired"))
        engine.extra.update(round=round_no, role="engine")
        cells.append(engine)
        tick(f"paired: round {round_no} of {plan.paired_rounds}, ceiling")
        ceiling_settings = replace(settings, key_prefix=f"{settings.key_prefix}pl{round_no}")
        ceiling = limit.measure(ceiling_settings, "EVALSHA", CLIENTS, plan.limit_pipeline,
                                plan.paired_cell_s, plan.limit_requests_max, scenario="paired")
        ceiling.label = f"round {round_no}: ceiling, {ceiling.label}"
        ceiling.extra.update(round=round_no, role="ceiling")
        cells.append(ceiling)
    return cells


def rounds(cells: list[Cell]) -> list[tuple[Cell, Cell]]:
    """(engine, ceiling) of each round that has both, in round order."""
    by_round: dict[int, dict[str, Cell]] = {}
    for cell in cells:
        if cell.scenario == "paired":
            by_round.setdefault(cell.extra["round"], {})[cell.extra["role"]] = cell
    return [(pair["engine"], pair["ceiling"]) for _, pair in sorted(by_round.items())
            if "engine" in pair and "ceiling" in pair]
