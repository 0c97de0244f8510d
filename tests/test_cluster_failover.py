"""A Redis Cluster with one replica per master: with WAIT configured
(RESERVES_REDIS_WAIT_REPLICAS=1) a master killed and its replica promoted loses no acknowledged
operation, and a write the replica did not confirm is reported as unconfirmed, not as done."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from engine.config import Settings
from engine.connection import sync_client
from engine.errors import Unavailable
from engine.service import ReserveService
from tests.cluster import LocalCluster, redis_cluster

FAILOVER_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with redis_cluster(masters=3, replicas=1, extra_args=("--appendonly", "yes",
                                                         "--appendfsync", "always")) as started:
        _wait_replicas_in_sync(started)
        yield started


def _info(port: int, section: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), "info", section], capture_output=True,
                          text=True, timeout=10).stdout


def _wait_replicas_in_sync(cluster: LocalCluster) -> None:
    deadline = time.monotonic() + FAILOVER_TIMEOUT_S
    while time.monotonic() < deadline:
        roles = [_info(p, "replication") for p in cluster.ports]
        replicas = [r for r in roles if "role:slave" in r]
        if len(replicas) == 3 and all("master_link_status:up" in r for r in replicas):
            return
        time.sleep(0.2)
    raise RuntimeError("replicas did not sync")


def _service(cluster: LocalCluster, prefix: str) -> ReserveService:
    settings = replace(Settings(), redis_url=cluster.url, redis_cluster=True, shard_count=16,
                       key_prefix=prefix, wait_replicas=1, wait_timeout_ms=500)
    return ReserveService(sync_client(settings), settings)


def _port_of(service: ReserveService, key: str) -> int:
    return int(service.client.get_node_from_key(key).port)


def _replica_of(cluster: LocalCluster, master_port: int) -> int:
    for port in cluster.ports:
        info = _info(port, "replication")
        if "role:slave" in info and f"master_port:{master_port}" in info:
            return port
    raise AssertionError(f"no replica of {master_port}")


def test_unconfirmed_write_is_not_reported_as_done(cluster: LocalCluster, key_prefix: str) -> None:
    service = _service(cluster, key_prefix)
    service.top_up_reserve("USDT", "100", "crypto", "seed")
    acct_key = service.ops.keys.account("RESERVE_USDT_CRYPTO").acct
    replica = _replica_of(cluster, _port_of(service, acct_key))
    # the replica is frozen: WAIT (500 ms) cannot be satisfied
    replica_pid = cluster.procs[replica].pid
    os.kill(replica_pid, signal.SIGSTOP)
    try:
        with pytest.raises(Unavailable, match="not confirmed by 1 replica"):
            service.reserve_amount("USDT", "10", "crypto", "h1", "swap")
    finally:
        os.kill(replica_pid, signal.SIGCONT)
    # the retry with the same reference is idempotent: one hold, locked once
    deadline = time.monotonic() + 10
    while True:
        try:
            result = service.reserve_amount("USDT", "10", "crypto", "h1", "swap")
            break
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert result["locked_balance"] == 10
    service.client.close()


def test_master_killed_replica_promoted_loses_no_acknowledged_operation(
    cluster: LocalCluster, key_prefix: str
) -> None:
    service = _service(cluster, key_prefix)
    service.top_up_reserve("USDT", "1000", "crypto", "seed")
    acked_locked = 0
    for i in range(100):
        service.reserve_amount("USDT", "1", "crypto", f"h{i}", "swap")
        acked_locked += 1_000_000
        if i % 2:
            service.release_reserve(f"h{i}")
            acked_locked -= 1_000_000
    acct_key = service.ops.keys.account("RESERVE_USDT_CRYPTO").acct
    master = _port_of(service, acct_key)
    replica = _replica_of(cluster, master)
    service.client.close()
    cluster.kill_node(master)
    deadline = time.monotonic() + FAILOVER_TIMEOUT_S
    while "role:master" not in _info(replica, "replication"):
        assert time.monotonic() < deadline, "replica was not promoted"
        time.sleep(0.2)
    settings = replace(service.settings, redis_url=f"redis://127.0.0.1:{replica}/0",
                       wait_replicas=0)
    after = ReserveService(sync_client(settings), settings)
    balance = after.get_reserve_balance("USDT", "crypto")
    assert balance["total_balance"] == 1000
    assert balance["locked_balance"] * 1_000_000 == acked_locked
    assert after.get_hold("h98")["state"] == "pending"
    assert after.get_hold("h99")["state"] == "released"
    after.client.close()
