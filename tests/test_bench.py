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


# --- The benchmark as a user runs it (issue 18): where it runs, what it writes, what its exit
# status means, and what it needs before it starts.


def _db_url(redis_url: str, db: int) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(redis_url)._replace(path=f"/{db}", query=""))


def test_the_ceiling_runs_on_the_engine_s_database(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """RESERVES_REDIS_URL with db 12: redis-benchmark SELECTs db 12, where reserve_command
    opened the account, so every call locks (on db 0 every call was refused)."""
    import subprocess

    from benchmarks import limit

    if not limit.available():
        pytest.skip("redis-benchmark is not installed")
    argvs: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        argvs.append(list(argv))
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(limit.subprocess, "run", recording_run)
    settings = replace(Settings(), redis_url=_db_url(redis_url, 12),
                       key_prefix=f"tb{uuid.uuid4().hex[:10]}")
    cell = limit.measure(settings, "EVALSHA", clients=4, pipeline=16, seconds=0.01,
                         requests_max=limit.REQUESTS_MIN)
    assert [a[0] for a in argvs] == ["redis-benchmark", "redis-benchmark"]  # calibration, run
    for argv in argvs:
        assert argv[argv.index("--dbnum") + 1] == "12"
    assert cell.violations == []
    assert cell.ok and cell.ops == limit.REQUESTS_MIN


def test_redis_benchmark_gets_the_url_s_credentials_and_tls_or_the_run_refuses() -> None:
    from benchmarks.limit import UnsupportedURL, connection_args

    assert connection_args("redis://127.0.0.1:6379/12") == [
        "-h", "127.0.0.1", "-p", "6379", "--dbnum", "12"]
    assert connection_args("unix:///run/redis.sock?db=4") == ["-s", "/run/redis.sock",
                                                              "--dbnum", "4"]
    assert connection_args(
        "rediss://app:p%40ss@cache:7000/3?ssl_ca_certs=/ca.pem&ssl_cert_reqs=none"
        "&socket_timeout=2") == [
        "-h", "cache", "-p", "7000", "--dbnum", "3", "--user", "app", "-a", "p@ss", "--tls",
        "--cacert", "/ca.pem", "--insecure"]
    with pytest.raises(UnsupportedURL, match=r"^redis-benchmark cannot be given the Redis "
                       r"URL's protocol, ssl_password: the ceiling cells would not run"):
        connection_args("rediss://h/1?ssl_password=x&protocol=3")
    with pytest.raises(UnsupportedURL, match="a user without a password .user 'app'"):
        connection_args("redis://app@h/1")


def _paired_cells(ceiling_violations: list[str]) -> list[Cell]:
    """Three paired rounds at 0.49x (the engine 39,000 ops/s, the ceiling 80,128 calls/s)."""
    cells = []
    for round_no in (1, 2, 3):
        cells.append(Cell("paired", f"round {round_no}: engine, commit cycle", 64, ops=39_000,
                          duration_s=1.0, reserve_p99_ms=1.25,
                          extra={"round": round_no, "role": "engine"}))
        cells.append(Cell("paired", f"round {round_no}: ceiling, EVALSHA reserve.lua, -P 16",
                          64, ops=80_128, duration_s=1.0, violations=list(ceiling_violations),
                          extra={"round": round_no, "role": "ceiling"}))
    return cells


def test_a_verdict_over_a_failed_cell_is_invalid_not_a_ratio() -> None:
    from benchmarks.report import markdown, targets

    refused = "only 0 holds for 80128 calls: calls were refused"
    by_name = {t["target"].split(" (")[0]: t for t in targets(_paired_cells([refused]))}
    ceiling = by_name["engine / redis-benchmark pipelined EVALSHA reserve.lua"]
    assert (ceiling["verdict"], ceiling["measured"], ceiling["met"]) == ("invalid", None, None)
    assert ceiling["detail"].startswith(
        "paired / round 1: ceiling, EVALSHA reserve.lua, -P 16 / 64 clients failed its checks "
        f"({refused})")
    p99 = by_name["p99 of one reserve"]  # rests on the engine cells only, which passed
    assert (p99["verdict"], p99["measured"]) == ("met", 1.25)
    valid = {t["target"].split(" (")[0]: t for t in targets(_paired_cells([]))}
    assert valid["engine / redis-benchmark pipelined EVALSHA reserve.lua"]["measured"] == 0.49
    meta = {"command": "x", "date": "d", "plan": "quick", "duration_s": 1.0, "machine": {},
            "targets": targets(_paired_cells([refused]))}
    row = next(line for line in markdown(_paired_cells([refused]), meta, None).splitlines()
               if line.startswith("| engine / redis-benchmark"))
    assert "| **invalid** |" in row and "0.49" not in row


def _run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch,
             cells: list[Cell], skipped: dict[str, str]) -> int:
    from engine.cli import main

    def fake_run(*args: Any, **kwargs: Any) -> tuple[list[Cell], dict[str, Any]]:
        return cells, {"skipped": skipped}

    monkeypatch.setattr(runner, "run", fake_run)
    return main(argv)


@pytest.mark.parametrize(("case", "status"), [("target not met", 0), ("failed cell", 1),
                                              ("scenario could not run", 1)])
def test_the_exit_status_is_about_the_checks_not_the_targets(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        case: str, status: int) -> None:
    cells = [Cell("engine", "commit cycle", 64, ops=1_000, duration_s=1.0),
             Cell("baseline", "commit cycle", 64, ops=100, duration_s=1.0)]  # 10x: not met
    skipped: dict[str, str] = {}
    if case == "failed cell":
        cells.append(Cell("limit", "EVALSHA reserve.lua, -P 16", 64, ops=10, duration_s=1.0,
                          violations=["only 0 holds for 10 calls: calls were refused"]))
    if case == "scenario could not run":
        skipped["http"] = "failed: RuntimeError: wrk died"
    rc = _run_cli(["bench", "--quick", "--out", str(tmp_path)], monkeypatch, cells, skipped)
    out, err = capsys.readouterr()
    assert rc == status
    assert ("engine / Postgres baseline (64 clients, 1 hot account): 10.0 (want >= 50x): "
            "NOT MET") in out
    assert ("could not run http: failed: RuntimeError: wrk died" in err) is (
        case == "scenario could not run")


def test_the_cli_prints_invalid_for_a_verdict_over_a_failed_cell(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    rc = _run_cli(["bench", "--quick", "--out", str(tmp_path)], monkeypatch,
                  _paired_cells(["only 0 holds for 80128 calls: calls were refused"]), {})
    line = next(x for x in capsys.readouterr().out.splitlines()
                if x.startswith("engine / redis-benchmark"))
    assert rc == 1
    assert line.startswith("engine / redis-benchmark pipelined EVALSHA reserve.lua (64 "
                           "clients): INVALID (paired / round 1: ceiling")
    assert "0.49" not in line and "NOT MET" not in line


def test_the_help_documents_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    text = capsys.readouterr().out
    assert "exit status:\n  0  every cell ran and passed its invariant checks, even if a " \
           "target was not met" in text
    assert "(default: the current directory;" in " ".join(text.split())


def _git_status(root: Path) -> str:
    import subprocess

    done = subprocess.run(["git", "-C", str(root), "status", "--porcelain"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    return done.stdout


def test_a_run_writes_into_the_current_directory_and_leaves_the_checkout_clean(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engine.cli import main

    root = Path(__file__).resolve().parent.parent
    before = _git_status(root)
    monkeypatch.setattr(plan, "QUICK", plan.TINY)  # seconds, no extra
    monkeypatch.setenv("RESERVES_REDIS_URL", redis_url)
    monkeypatch.chdir(tmp_path)
    rc = main(["bench", "--quick", "--scenarios", "engine", "--no-progress"])
    assert rc == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"RESULTS.md", "results.json"}
    assert _git_status(root) == before


def test_a_missing_prerequisite_is_named_before_any_cell_runs(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    import shutil

    from benchmarks import prerequisites
    from engine.cli import main

    real_which = shutil.which
    monkeypatch.setattr(prerequisites.shutil, "which",
                        lambda name, *a, **k: None if name == "wrk" else real_which(name, *a, **k))
    monkeypatch.setattr(prerequisites, "PACKAGES", ("reserves_no_such_module",))
    ran: list[str] = []
    monkeypatch.setattr(runner, "_scenario", lambda ctx, name: ran.append(name) or [])
    monkeypatch.setenv("RESERVES_REDIS_URL", redis_url)
    rc = main(["bench", "--quick", "--scenarios", "engine", "http", "--no-progress",
               "--out", str(tmp_path)])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2
    assert ran == [] and list(tmp_path.iterdir()) == []
    assert err[0] == "cannot start the benchmark run:"
    assert "- wrk is not installed (for http): apt-get install -y wrk" in err
    assert any(line.startswith("- the bench extra is not installed (reserves_no_such_module "
                               "missing): ") and line.endswith('pip install -e "'
                               f'{Path(__file__).resolve().parent.parent}[bench]"')
               for line in err), err
    assert "or run only the others" not in "\n".join(err)  # the extra is for every scenario


def test_missing_tools_name_the_scenarios_to_run_without_them(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from benchmarks import prerequisites

    real_which = shutil.which
    monkeypatch.setattr(prerequisites.shutil, "which", lambda name, *a, **k: None if name in (
        "wrk", "redis-benchmark") else real_which(name, *a, **k))
    chosen = plan.select(plan.TINY, ("engine", "limit", "http", "paired"))
    with pytest.raises(prerequisites.MissingPrerequisites) as raised:
        runner.run(chosen, None, "pytest", redis_url=redis_url, progress=False)
    assert str(raised.value).splitlines() == [
        "cannot start the benchmark run:",
        "- redis-benchmark is not installed (for limit, paired): apt-get install -y redis-tools",
        "- wrk is not installed (for http): apt-get install -y wrk",
        "or run only the others: --scenarios engine"]


def test_render_without_results_names_the_folder_to_give(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    from engine.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--render"]) == 2
    assert capsys.readouterr().err == (f"no results.json in {tmp_path}: give the run's folder "
                                       "with --out (the committed run: --out benchmarks)\n")
    assert list(tmp_path.iterdir()) == []
