"""RESULTS.md, results.json and the latency plot of one run."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.paired import rounds
from benchmarks.stats import Cell, percentile_ms

TARGET_BASELINE_RATIO = 50.0
TARGET_CEILING_RATIO = 1.0
TARGET_P99_MS = 2.0
ANALYSIS_FILE = Path(__file__).with_name("ANALYSIS.md")
VERDICTS = {True: "met", False: "not met", None: "not measured"}


def _find(cells: list[Cell], scenario: str, label_start: str, clients: int,
          accounts: int = 1) -> Cell | None:
    for cell in cells:
        if (cell.scenario == scenario and cell.label.startswith(label_start)
                and cell.clients == clients and cell.accounts == accounts):
            return cell
    return None


def _invalid(used: list[Cell]) -> str | None:
    """Why a verdict resting on these cells cannot be given: the ones that failed their checks
    (their figures measured something else, e.g. calls refused on the wrong database)."""
    failed = [c for c in used if not c.ok]
    if not failed:
        return None
    reasons = [f"{c.scenario} / {c.label} / {c.clients} clients failed its checks ("
               + ("; ".join(c.violations[:2]) or f"{c.errors} errors") + ")"
               for c in failed[:3]]
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    return "; ".join(reasons) + more


def targets(cells: list[Cell]) -> list[dict[str, Any]]:
    """The issue's ratios, each met / not met / not measured / invalid (a cell it rests on
    failed its invariant checks, so its figure is not used), from this run's cells."""
    engine = _find(cells, "engine", "commit cycle", 64)
    baseline = _find(cells, "baseline", "commit cycle", 64)
    ceiling = _find(cells, "limit", "EVALSHA reserve.lua, -P", 64)
    persister = next((c for c in cells if c.scenario == "persister"), None)
    out: list[dict[str, Any]] = []

    def add(name: str, measured: float | None, target: str, met: bool | None,
            detail: str, used: list[Cell] | None = None) -> None:
        invalid = _invalid(used or [])
        if invalid:
            measured, met, detail = None, None, invalid
        verdict = "invalid" if invalid else VERDICTS[met]
        out.append({"target": name, "measured": measured, "wanted": target,
                    "met": met, "verdict": verdict, "detail": detail})

    if engine and baseline and baseline.ops_per_s:
        ratio = engine.ops_per_s / baseline.ops_per_s
        add("engine / Postgres baseline (64 clients, 1 hot account)", round(ratio, 1),
            f">= {TARGET_BASELINE_RATIO:g}x", ratio >= TARGET_BASELINE_RATIO,
            f"{engine.ops_per_s:,.0f} vs {baseline.ops_per_s:,.0f} ops/s", [engine, baseline])
    else:
        add("engine / Postgres baseline (64 clients, 1 hot account)", None,
            f">= {TARGET_BASELINE_RATIO:g}x", None, "not measured in this run")
    pairs = [(e, c) for e, c in rounds(cells) if c.ops_per_s]
    if pairs:
        ratios = [e.ops_per_s / c.ops_per_s for e, c in pairs]
        ratio = statistics.median(ratios)
        add("engine / redis-benchmark pipelined EVALSHA reserve.lua (64 clients)",
            round(ratio, 2), f">= {TARGET_CEILING_RATIO:g}x", ratio >= TARGET_CEILING_RATIO,
            f"median of {len(pairs)} back-to-back rounds (each "
            f"{min(ratios):.2f}-{max(ratios):.2f}x): engine "
            + ", ".join(f"{e.ops_per_s:,.0f}" for e, _ in pairs) + " ops/s vs ceiling "
            + ", ".join(f"{c.ops_per_s:,.0f}" for _, c in pairs) + " calls/s",
            [cell for pair in pairs for cell in pair])
    elif engine and ceiling and ceiling.ops_per_s:
        ratio = engine.ops_per_s / ceiling.ops_per_s
        add("engine / redis-benchmark pipelined EVALSHA reserve.lua (64 clients)",
            round(ratio, 2), f">= {TARGET_CEILING_RATIO:g}x", ratio >= TARGET_CEILING_RATIO,
            f"{engine.ops_per_s:,.0f} vs {ceiling.ops_per_s:,.0f} calls/s ({ceiling.label})",
            [engine, ceiling])
    else:
        add("engine / redis-benchmark pipelined EVALSHA reserve.lua (64 clients)", None,
            f">= {TARGET_CEILING_RATIO:g}x", None, "not measured in this run")
    if pairs:
        p99s = [e.reserve_p99_ms for e, _ in pairs]
        p99 = statistics.median(p99s)
        add("p99 of one reserve (engine, 64 clients, 1 hot account)", round(p99, 3),
            f"< {TARGET_P99_MS:g} ms", p99 < TARGET_P99_MS,
            f"median of {len(pairs)} rounds (each {min(p99s):.3f}-{max(p99s):.3f} ms); p50 of "
            f"all operations {statistics.median(e.p50_ms for e, _ in pairs):.3f} ms",
            [e for e, _ in pairs])
    elif engine:
        add("p99 of one reserve (engine, 64 clients, 1 hot account)",
            round(engine.reserve_p99_ms, 3), f"< {TARGET_P99_MS:g} ms",
            engine.reserve_p99_ms < TARGET_P99_MS,
            f"p50 of all operations {engine.p50_ms:.3f} ms", [engine])
    else:
        add("p99 of one reserve (engine, 64 clients, 1 hot account)", None,
            f"< {TARGET_P99_MS:g} ms", None, "not measured in this run")
    if persister:
        x = persister.extra
        add("persister keeps up (events/s into Postgres vs the engine's, lag bounded)",
            x.get("events_per_s"), ">= 0.9 x engine rate, lag bounded",
            bool(x.get("keeps_up")),
            f"{x.get('events_per_s', 0):,.0f} events/s written while the engine produced "
            f"{x.get('engine_events_per_s', 0):,.0f}/s; lag mean {x.get('lag_first_third_mean')}"
            f" -> {x.get('lag_last_third_mean')} events (first -> last third), max "
            f"{x.get('lag_max')}; drained in {x.get('drain_s')} s; reconcile differences "
            f"{x.get('reconcile_differences')}", [persister])
    else:
        add("persister keeps up", None, ">= 0.9 x engine rate, lag bounded", None,
            "not measured in this run")
    return out


def _verdict(target: dict[str, Any]) -> str:
    verdict = target.get("verdict") or VERDICTS[target["met"]]  # older results.json: no verdict
    return f"**{verdict}**" if verdict in ("not met", "invalid") else verdict


def _row(cell: Cell, with_accounts: bool = True) -> str:
    status = "ok" if cell.ok else f"**FAILED** ({cell.errors} errors, {len(cell.violations)} violations)"
    batch = cell.extra.get("ops_per_batch", "")
    load = cell.extra.get("load_1m", "")
    parts = [cell.label, str(cell.clients)]
    if with_accounts:
        parts.append(f"{cell.accounts:,}")
    parts += [f"{cell.ops_per_s:,.0f}", f"{cell.p50_ms:.3f}", f"{cell.p99_ms:.3f}",
              f"{cell.p999_ms:.3f}" if cell.p999_ms else "", f"{cell.reserve_p99_ms:.3f}"
              if cell.reserve_p99_ms else "", str(batch), str(load), status]
    return "| " + " | ".join(parts) + " |"


_HEAD = ("| cells | clients | accounts | ops/s | p50 ms | p99 ms | p99.9 ms | reserve p99 ms "
         "| ops/batch | load (1 min) | invariants |\n"
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")


def markdown(cells: list[Cell], meta: dict[str, Any], profile: dict[str, Any] | None) -> str:
    lines = ["# Benchmark results", "",
             f"Run `{meta['command']}` on {meta['date']} (plan `{meta['plan']}`, "
             f"{meta['duration_s']:.0f} s in all). Every cell ends with its invariant checks "
             "(no oversell, conservation against what the callers saw, the journal adding up; "
             "Postgres equal to Redis after the persister drains): a cell that fails them is "
             "marked FAILED whatever its speed.", "",
             "## Machine", ""]
    for key, value in meta["machine"].items():
        lines.append(f"- {key}: {value}")
    lines += ["", "## Targets (ratios measured in this run)", "",
              "| target | measured | wanted | verdict | detail |", "|---|---:|---|---|---|"]
    for t in meta["targets"]:
        measured = "" if t["measured"] is None else f"{t['measured']:,}"
        lines.append(f"| {t['target']} | {measured} | {t['wanted']} | {_verdict(t)} "
                     f"| {t['detail']} |")
    sections = [
        ("engine", "Engine (asyncio ReserveEngine, micro-batching on unless said)",
         "ops/s counts every reserve, commit and release (a cycle is two)."),
        ("baseline", "Baseline: Postgres, one transaction per operation, SELECT ... FOR UPDATE",
         "psycopg 3 async, a pool of up to 64 connections; same cycles, same counting."),
        ("limit", "Limit: redis-benchmark",
         "EVALSHA of lua/reserve.lua (the per-operation script, journal XADD included), one "
         "new reference per call, and PING. ops/s is calls/s."),
        ("http", "HTTP: POST /wallet/reserves/USD/fiat/reserve (wrk, 1 thread, separate process)",
         "ops/s counts 2xx responses; every response that was not 2xx counts as an error."),
        ("paired", "The targets' cells back to back, round by round",
         "Each round: the engine at 64 clients on the hot account (reserve -> commit), then "
         "redis-benchmark's EVALSHA of reserve.lua at 64 clients with -P 16, seconds apart. "
         "The targets above take the median round."),
        ("cluster", "Redis Cluster: same load on 1, 2 and 3 local masters",
         "64 clients, 1,000 accounts over 16 shards, reserve -> commit cycles. On this 2-core "
         "machine the masters share the cores with the client: more masters add processes "
         "and per-slot batches, not capacity, so the figure shows the overhead, not a "
         "speed-up."),
    ]
    for scenario, title, note in sections:
        chosen = [c for c in cells if c.scenario == scenario]
        if not chosen:
            continue
        lines += ["", f"## {title}", "", note, "", _HEAD]
        lines += [_row(c) for c in chosen]
    persister = [c for c in cells if c.scenario == "persister"]
    if persister:
        c = persister[0]
        x = c.extra
        lines += ["", "## Persister (`reserves persist`, its own process) under the engine", "",
                  f"The engine ran {c.clients} clients on the hot account for "
                  f"{c.duration_s:.1f} s at {c.ops_per_s:,.0f} events/s; the persister wrote "
                  f"{x.get('events_per_s', 0):,.0f} events/s into Postgres. Lag (events not "
                  f"persisted yet): mean {x.get('lag_first_third_mean')} in the first third, "
                  f"{x.get('lag_last_third_mean')} in the last, max {x.get('lag_max')}; oldest "
                  f"unpersisted event at most {x.get('oldest_unpersisted_max_s')} s old. "
                  f"Bounded: {x.get('lag_bounded')}. After the load it drained in "
                  f"{x.get('drain_s')} s and reconcile found {x.get('reconcile_differences')} "
                  f"difference(s). Invariants: {'ok' if c.ok else 'FAILED'}."]
    failed = [c for c in cells if not c.ok]
    lines += ["", "## Invariant failures", ""]
    if failed:
        for c in failed:
            lines.append(f"- {c.scenario} / {c.label} / {c.clients} clients / {c.accounts} "
                         f"accounts: {c.errors} errors {c.extra.get('first_errors', '')}; "
                         + "; ".join(c.violations[:5]))
    else:
        lines.append("None: every cell passed its checks.")
    if profile:
        lines += ["", "## Profile of the engine (py-spy, 64 clients, hot account)", "",
                  profile["summary"], "", "| share of samples | where |", "|---:|---|"]
        for share, frame in profile["top"]:
            lines.append(f"| {share:.1f} % | `{frame}` |")
    if ANALYSIS_FILE.exists():
        lines += ["", ANALYSIS_FILE.read_text(encoding="utf-8").strip()]
    lines += ["", "Latency distributions: `latency.png`. Raw figures: `results.json`.", ""]
    return "\n".join(lines)


def plot(cells: list[Cell], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    points = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99]
    xs = [-math.log10(1 - p / 100) for p in points]
    fig, ax = plt.subplots(figsize=(12, 5.5))
    for cell in cells:
        if not cell.samples_ns or cell.clients not in (64,) or cell.accounts != 1:
            continue
        ys = [max(percentile_ms(cell.samples_ns, p), 1e-3) for p in points]
        ax.plot(xs, ys, marker="o", label=f"{cell.scenario}: {cell.label}")
    for cell in cells:
        if cell.scenario in ("http", "limit") and cell.clients == 64 and cell.p99_ms:
            style = "s--" if cell.scenario == "http" else "^:"
            pts = [(xs[0], cell.p50_ms), (xs[4], cell.p99_ms)]
            if cell.p999_ms:
                pts.append((xs[6], cell.p999_ms))
            ax.plot([p[0] for p in pts], [max(p[1], 1e-3) for p in pts], style,
                    label=f"{cell.scenario}: {cell.label}")
    if not ax.lines:  # no cell at 64 clients on the hot account in this run
        plt.close(fig)
        return False
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"p{p:g}" for p in points])
    ax.set_ylabel("latency per operation (ms, log scale)")
    ax.set_title("Latency at 64 clients, 1 hot account")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(out_dir: Path, cells: list[Cell], meta: dict[str, Any],
          profile: dict[str, Any] | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "targets": targets(cells)}
    data = {"meta": meta, "profile": profile, "cells": [c.to_dict() for c in cells]}
    (out_dir / "results.json").write_text(json.dumps(data, indent=1, default=str) + "\n",
                                          encoding="utf-8")
    (out_dir / "RESULTS.md").write_text(markdown(cells, meta, profile), encoding="utf-8")
    plot(cells, out_dir / "latency.png")


def render(out_dir: Path) -> None:
    """RESULTS.md again from results.json (after ANALYSIS.md changed); the plot stays as it is."""
    data = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    names = set(Cell.__dataclass_fields__) - {"samples_ns"}
    cells = [Cell(**{k: v for k, v in c.items() if k in names}) for c in data["cells"]]
    profile = data.get("profile")
    if profile:
        profile["top"] = [tuple(item) for item in profile["top"]]
    (out_dir / "RESULTS.md").write_text(markdown(cells, data["meta"], profile), encoding="utf-8")


def table(cells: list[Cell]) -> str:
    """A plain-text table for the terminal."""
    rows = [f"{'scenario':<10} {'cells':<38} {'cl':>4} {'acc':>5} {'ops/s':>10} {'p50':>7} "
            f"{'p99':>7} {'p99.9':>7}  ok"]
    for c in cells:
        rows.append(f"{c.scenario:<10} {c.label[:38]:<38} {c.clients:>4} {c.accounts:>5} "
                    f"{c.ops_per_s:>10,.0f} {c.p50_ms:>7.3f} {c.p99_ms:>7.3f} "
                    f"{c.p999_ms:>7.3f}  {'ok' if c.ok else 'FAILED'}")
    return "\n".join(rows)
