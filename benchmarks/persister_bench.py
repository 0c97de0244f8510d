"""Scenario 5: the persister (`reserves persist`, its own process) while the engine runs at full
speed (64 clients, the hot account, reserve -> commit cycles).

Sampled every plan.persister_sample_s: events written to Postgres and the journal lag (events
not yet persisted). The lag must stay bounded: its mean over the last third of the run may not
be far above its mean over the first third. After the load stops the persister drains, and
then Postgres must equal Redis (persistence.reconcile: no difference at all)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from benchmarks import engine_bench, invariants, services
from benchmarks.stats import Cell
from engine.config import Settings
from engine.connection import sync_client
from persistence import limits as persist_limits
from persistence.worker import Persister

CLIENTS = 64
LAG_GROWTH_MAX = 2.0  # last third's mean lag over the first third's (plus one batch of slack)


@contextmanager
def fresh_database(database_url: str, run_id: str) -> Iterator[str]:
    """A new Postgres database for the run (the ledger must hold only this run's events)."""
    import sqlalchemy as sa

    name = f"{run_id}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield sa.make_url(database_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _start_persister(settings: Settings, database_url: str,
                     log: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RESERVES_REDIS_URL": settings.redis_url or "",
           "RESERVES_KEY_PREFIX": settings.key_prefix, "RESERVES_DATABASE_URL": database_url,
           "RESERVES_SHARDS": str(settings.shard_count)}
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "persist"], env=env,
                            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    services.stop_process(proc, persist_limits.shutdown_deadline_s + 5, group=True)


def _written(database_url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM transactions")).scalar_one())
    finally:
        engine.dispose()


class _Sampler(threading.Thread):
    def __init__(self, persister: Persister, database_url: str, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.persister = persister
        self.database_url = database_url
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.samples: list[dict[str, float]] = []
        self.failure: str | None = None

    def run(self) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(self.database_url)
        started = time.monotonic()
        try:
            with engine.connect() as conn:
                while not self.stop.wait(self.interval_s):
                    lag = self.persister.lag()["total"]
                    try:
                        written = int(conn.execute(
                            sa.text("SELECT count(*) FROM transactions")).scalar_one())
                    except sa.exc.ProgrammingError:  # not migrated yet
                        conn.rollback()
                        written = 0
                    self.samples.append({
                        "t_s": round(time.monotonic() - started, 3), "written": written,
                        "lag_events": lag["pending"] + lag["unread"],
                        "oldest_s": lag["oldest_unpersisted_age_s"]})
        except Exception as exc:  # reported in the cell; the run goes on
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            engine.dispose()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def run(settings: Settings, database_url: str, run_id: str, plan: Any,
        tick: Callable[[str], None], run_async: Any = asyncio.run) -> list[Cell]:
    from persistence.reconcile import reconcile

    tick(f"persister: engine at {CLIENTS} clients for {plan.persister_s:g} s")
    settings = replace(settings, key_prefix=f"{settings.key_prefix}p")
    client = sync_client(settings)
    with fresh_database(database_url, run_id) as db_url:
        log = tempfile.TemporaryFile()  # the persister's log: a pipe could fill and block it
        proc = _start_persister(settings, db_url, log)
        persister = Persister(client, settings, db_url)
        sampler = _Sampler(persister, db_url, plan.persister_sample_s)
        spec = engine_bench.CellSpec(CLIENTS, 1, "commit", 0.0, plan.persister_s,
                                     plan.balance_minor, check_journal=False, keep_keys=True)
        cell: Cell | None = None
        try:
            sampler.start()
            cell = run_async(_engine_then_drain(settings, spec, sampler, persister, plan))
            differences = reconcile(client, settings, db_url)
            cell.extra["reconcile_differences"] = len(differences)
            cell.violations += [f"reconcile: {d}" for d in differences[:5]]
        finally:
            sampler.stop.set()
            sampler.join(timeout=10)
            _stop(proc)
            log.close()
            invariants.delete_prefix(client, settings.key_prefix)
            client.close()
        return [cell]


async def _engine_then_drain(settings: Settings, spec: engine_bench.CellSpec,
                             sampler: _Sampler, persister: Persister, plan: Any) -> Cell:
    cell = await engine_bench.run_cell(settings, spec, "persister under engine load",
                                       scenario="persister")
    load_samples = list(sampler.samples)
    drain_started = time.monotonic()
    deadline = drain_started + plan.drain_timeout_s
    drained = False
    while time.monotonic() < deadline:
        lag = await asyncio.to_thread(lambda: persister.lag()["total"])
        if lag["pending"] + lag["unread"] == 0:
            drained = True
            break
        await asyncio.sleep(0.2)
    drain_s = time.monotonic() - drain_started
    _summarise(cell, load_samples, drained, drain_s, plan, sampler.failure)
    return cell


def _summarise(cell: Cell, samples: list[dict[str, float]], drained: bool, drain_s: float,
               plan: Any, failure: str | None) -> None:
    cell.extra["samples"] = samples
    cell.extra["drain_s"] = round(drain_s, 2)
    if failure:
        cell.violations.append(f"lag sampler failed: {failure}")
    if not drained:
        cell.violations.append(f"not drained within {plan.drain_timeout_s:g} s")
    engine_rate = cell.ops_per_s  # operations = journal events (one each)
    written = [s["written"] for s in samples]
    if len(samples) >= 2 and samples[-1]["t_s"] > samples[0]["t_s"]:
        rate = (written[-1] - written[0]) / (samples[-1]["t_s"] - samples[0]["t_s"])
    else:
        rate = 0.0
    third = max(1, len(samples) // 3)
    first = _mean([s["lag_events"] for s in samples[:third]])
    last = _mean([s["lag_events"] for s in samples[-third:]])
    bounded = last <= LAG_GROWTH_MAX * first + persist_limits.batch_count_max
    cell.extra.update({
        "events_per_s": round(rate, 1), "engine_events_per_s": round(engine_rate, 1),
        "lag_first_third_mean": round(first, 1), "lag_last_third_mean": round(last, 1),
        "lag_max": max((s["lag_events"] for s in samples), default=0),
        "oldest_unpersisted_max_s": max((s["oldest_s"] for s in samples), default=0.0),
        "lag_bounded": bounded,
        "keeps_up": bounded and rate >= 0.9 * engine_rate,
    })
