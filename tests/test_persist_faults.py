"""The persister under faults: killed mid-batch, database unreachable. Nothing is lost and
nothing is doubled; the rows are compared with the journal event by event."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from persistence.reconcile import reconcile
from tests import services
from tests.persist_support import (
    Stack,
    assert_rows_equal_events,
    journal,
    run_workload,
)

WAIT_S_MAX = 60.0  # how long a test waits for a background process to reach a state


class Crash(BaseException):
    """The process dying at this point (not an error the persister handles)."""


wait_until = functools.partial(services.wait_for, timeout_s=WAIT_S_MAX)


def union(*snapshots: list[Any]) -> list[Any]:
    """Journal snapshots taken at several times (the persister trims what it acknowledged)."""
    by_id = {e.event_id: e for snapshot in snapshots for e in snapshot}
    return [by_id[i] for i in sorted(by_id)]


def _row_count(stack: Stack) -> int:
    try:
        return len(stack.store().event_ids())
    except Exception:
        return 0  # the schema is not there yet


def test_crash_between_commit_and_ack_neither_loses_nor_doubles(stack: Stack) -> None:
    run_workload(stack.client, stack.settings, 300)
    events = journal(stack.client, stack.settings)
    victim = stack.persister("victim", batch_count_max=50)

    def ack_then_die(batch: Any) -> None:
        raise Crash

    victim._ack = ack_then_die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        victim.drain(timeout_s=30)
    committed = _row_count(stack)
    assert 0 < committed < len(events)
    # written, never acknowledged; and at most one batch read ahead while it was written
    pending = victim.lag()["total"]["pending"]
    assert committed <= pending <= committed + 50
    survivor = stack.persister("survivor", claim_idle_ms=0)
    assert survivor.drain(timeout_s=60) == len(events) - committed
    assert_rows_equal_events(stack, events)
    assert survivor.lag()["total"]["pending"] == 0
    assert reconcile(stack.client, stack.settings, stack.database_url) == []


def test_crash_between_read_and_commit_is_redone_by_the_same_consumer(stack: Stack) -> None:
    run_workload(stack.client, stack.settings, 300)
    events = journal(stack.client, stack.settings)
    victim = stack.persister("p1", batch_count_max=40)
    victim.bootstrap()

    def die_before_commit(batch: Any) -> int:
        raise Crash

    victim.store.write_batch = die_before_commit  # type: ignore[method-assign]
    with pytest.raises(Crash):
        victim.drain(timeout_s=30)
    assert _row_count(stack) == 0
    taken = victim.lag()["total"]["pending"]
    assert taken > 0
    # restarted under the same name (claiming others is off): its own pending entries first
    restarted = stack.persister("p1", claim_idle_ms=3_600_000)
    assert restarted.drain(timeout_s=60) == len(events)
    assert_rows_equal_events(stack, events)
    assert reconcile(stack.client, stack.settings, stack.database_url) == []


def _persist_process(stack: Stack, consumer: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RESERVES_REDIS_URL": stack.settings.redis_url or "",
           "RESERVES_DATABASE_URL": stack.database_url,
           "RESERVES_KEY_PREFIX": stack.settings.key_prefix,
           "RESERVES_SHARDS": str(stack.settings.shard_count)}
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "persist", "--consumer", consumer, *extra],
        env=env, cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


@pytest.mark.real
def test_persist_process_killed_mid_run_then_restarted(pg_stack: Stack) -> None:
    stack = pg_stack
    run_workload(stack.client, stack.settings, 2_000)
    before = journal(stack.client, stack.settings)
    proc = _persist_process(stack, "victim", "--batch-count", "20")
    try:
        wait_until(lambda: _row_count(stack) > 0 or proc.poll() is not None, "first rows")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
    workload_more = run_workload(stack.client, stack.settings, 200, seed=11)
    assert workload_more.applied_count > 0
    events = union(before, journal(stack.client, stack.settings))
    assert _row_count(stack) < len(events)
    survivor = stack.persister("survivor", claim_idle_ms=0)
    survivor.drain(timeout_s=60)
    assert_rows_equal_events(stack, events)
    assert reconcile(stack.client, stack.settings, stack.database_url) == []


@pytest.mark.real
def test_persist_process_stops_cleanly_on_sigterm(pg_stack: Stack) -> None:
    stack = pg_stack
    run_workload(stack.client, stack.settings, 300)
    events = journal(stack.client, stack.settings)
    proc = _persist_process(stack, "graceful")
    try:
        wait_until(lambda: _row_count(stack) == len(events) or proc.poll() is not None,
                   "every event persisted")
    finally:
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=30)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    assert returncode == 0, stderr
    assert_rows_equal_events(stack, events)


def _run_in_thread(stack: Stack, **kwargs: Any) -> tuple[Any, threading.Event, threading.Thread]:
    persister = stack.persister("bg", read_block_ms=100, **kwargs)
    stop = threading.Event()
    thread = threading.Thread(target=persister.run, args=(stop,), daemon=True)
    thread.start()
    return persister, stop, thread


def _caught_up(persister: Any) -> bool:
    total = persister.lag()["total"]
    return total["pending"] == 0 and total["unread"] == 0


@pytest.mark.real
def test_postgres_unreachable_then_back_everything_arrives(
    pg_stack: Stack, database_url: str
) -> None:
    stack = pg_stack
    name = sa.make_url(stack.database_url).database
    admin = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    # snapshot the journal before the persister runs: it trims what it has written
    run_workload(stack.client, stack.settings, 200)
    snapshots = [journal(stack.client, stack.settings)]
    persister, stop, thread = _run_in_thread(stack)
    try:
        wait_until(lambda: _caught_up(persister), "first events persisted")
        with admin.connect() as conn:  # the database goes away for this persister
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = :name"), {"name": name})
        retries_before = persister.retry_count
        run_workload(stack.client, stack.settings, 300, seed=3)
        snapshots.append(journal(stack.client, stack.settings))
        wait_until(lambda: persister.retry_count > retries_before + 2, "retries while down")
        assert not _caught_up(persister)
        assert thread.is_alive()
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        wait_until(lambda: _caught_up(persister), "catch-up after the database returned")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert_rows_equal_events(stack, union(*snapshots))
    assert reconcile(stack.client, stack.settings, stack.database_url) == []


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_sqlite_unreachable_then_back_everything_arrives(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "later"
    stack.database_url = f"sqlite:///{folder}/reserves.db"  # the folder does not exist yet
    run_workload(stack.client, stack.settings, 200)
    events = journal(stack.client, stack.settings)
    persister, stop, thread = _run_in_thread(stack)
    try:
        wait_until(lambda: persister.retry_count >= 3, "retries while unreachable")
        assert thread.is_alive()
        folder.mkdir()
        wait_until(lambda: _caught_up(persister), "catch-up once the database can be opened")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert_rows_equal_events(stack, events)
    assert reconcile(stack.client, stack.settings, stack.database_url) == []


def test_trim_while_the_writer_acknowledges_the_last_pending_entries(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer thread may acknowledge a batch between trim's XINFO (entries pending) and its
    XPENDING (none left): trim then keeps what the group had delivered, and nothing pending is
    lost (CI caught trim failing on exactly this)."""
    run_workload(stack.client, stack.settings, 50)
    events = journal(stack.client, stack.settings)
    persister = stack.persister("p1")
    persister.bootstrap()
    batch = persister._read(None)
    assert len(batch) == len(events)
    real_xpending = stack.client.xpending

    def acknowledged_meanwhile(stream: str, group: str) -> Any:
        persister._write_and_ack(batch)
        return real_xpending(stream, group)

    monkeypatch.setattr(stack.client, "xpending", acknowledged_meanwhile)
    persister.trim()
    assert_rows_equal_events(stack, events)
    assert persister.lag()["total"]["pending"] == 0
    assert reconcile(stack.client, stack.settings, stack.database_url) == []
