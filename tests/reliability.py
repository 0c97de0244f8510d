"""Reliability figures of a test run, printed at its end (and written as JSON to
RESERVES_FIGURES_PATH when set): what ran, what was injected, what was lost.

Counted here, not claimed: the tests of each reliability group that passed or failed, the
hypothesis test cases each group ran (every @given example and every state-machine run, from
hypothesis' own statistics), and the figures tests record with `record(name, count)`.
Loaded with `-p tests.reliability` (pyproject addopts).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

FIGURES: Counter[str] = Counter()

# Reliability groups, by test file.
GROUPS = {
    "test_model.py": "model-based",
    "test_regressions.py": "regressions",
    "test_concurrency_processes.py": "concurrency",
    "test_engine_concurrency.py": "concurrency",
    "test_faults_redis.py": "faults",
    "test_persist_faults.py": "faults",
    "test_api_faults.py": "faults",
    "test_cluster_failover.py": "faults",
    "test_api_fuzz.py": "API fuzzing",
    "test_api_security.py": "security",
}


def record(name: str, count: int = 1) -> None:
    """Add to a figure of this run (e.g. requests sent, faults injected)."""
    FIGURES[name] += count


def _group(nodeid: str) -> str | None:
    return GROUPS.get(Path(nodeid.split("::", 1)[0]).name)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    group = _group(item.nodeid)
    if group is None:
        return (yield)
    from hypothesis.statistics import collector

    previous = collector.value

    def note(stats: dict[str, Any]) -> None:
        for phase in ("explicit", "reuse", "generate", "shrink"):
            cases = stats.get(f"{phase}-phase", {}).get("test-cases", [])
            FIGURES[f"{group}: hypothesis cases"] += sum(c["status"] == "valid" for c in cases)
        if previous is not None:
            previous(stats)

    with collector.with_value(note):
        return (yield)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    group = _group(report.nodeid)
    if group is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        FIGURES[f"{group}: tests {report.outcome}"] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name in sorted(FIGURES):
        terminalreporter.write_line(f"{name:<60} {FIGURES[name]:>10,}")
    path = os.environ.get("RESERVES_FIGURES_PATH")
    if path:
        Path(path).write_text(json.dumps(dict(sorted(FIGURES.items())), indent=1) + "\n")
