"""Issue 8's benchmark: the engine on a local Redis Cluster of 1, 2 and 3 masters, same load
(64 clients, 1,000 accounts spread over 16 shards, reserve -> commit cycles).

The nodes are redis-server processes with --cluster-enabled on free loopback ports, started by
benchmarks/services.py (which the tests' cluster uses too). On a 2-core machine that also runs
the client, more masters add processes and hops, not cores: the figure shows the overhead."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from benchmarks import engine_bench, services
from benchmarks.stats import Cell
from engine.config import Settings

SHARDS = 16


def available() -> bool:
    return not services.missing("redis-server", "redis-cli")


@contextmanager
def local_cluster(masters: int) -> Iterator[str]:
    """A local cluster of masters without persistence; yields its URL."""
    with services.redis_cluster(masters, extra_args=("--appendonly", "no")) as cluster:
        yield cluster.url


def run(settings: Settings, plan: Any, tick: Callable[[str], None],
        run_async: Any = asyncio.run) -> list[Cell]:
    results = []
    for masters in plan.cluster_masters_counts:
        tick(f"cluster: {masters} master(s), {plan.cluster_clients} clients")
        with local_cluster(masters) as url:
            cluster_settings = replace(settings, redis_url=url, redis_cluster=True,
                                       shard_count=SHARDS, key_prefix=f"{settings.key_prefix}c")
            spec = engine_bench.CellSpec(plan.cluster_clients, plan.cluster_accounts, "commit",
                                         plan.warmup_s, plan.cluster_s, plan.balance_minor)
            cell = run_async(engine_bench.run_cell(
                cluster_settings, spec, f"{masters} master(s), {SHARDS} shards",
                scenario="cluster"))
            cell.extra["masters"] = masters
            results.append(cell)
    return results
