"""A real local Redis Cluster for the tests: redis-server nodes with --cluster-enabled yes on
free loopback ports, torn down after (launched by benchmarks/services.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks import services as launch
from benchmarks.services import LocalCluster
from tests.services import unavailable

__all__ = ["LocalCluster", "redis_cluster"]


@contextmanager
def redis_cluster(masters: int = 3, replicas: int = 0,
                  extra_args: tuple[str, ...] = ()) -> Iterator[LocalCluster]:
    if launch.missing("redis-server", "redis-cli"):
        unavailable("redis-server / redis-cli are not installed: skipping the Redis Cluster tests")
    with launch.redis_cluster(masters, replicas, extra_args) as cluster:
        yield cluster
