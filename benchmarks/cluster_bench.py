"""Issue 8's benchmark: the engine on a local Redis Cluster of 1, 2 and 3 masters, same load
(64 clients, 1,000 accounts spread over 16 shards, reserve -> commit cycles).

The nodes are redis-server processes with --cluster-enabled on free loopback ports (as
tests/cluster.py, which the installed package cannot import). On a 2-core machine that also runs
the client, more masters add processes and hops, not cores: the figure shows the overhead."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from benchmarks import engine_bench
from benchmarks.stats import Cell
from engine.config import Settings

START_TIMEOUT_S = 30.0
SHARDS = 16


def available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in ports and port + 10000 < 65536:  # the cluster bus is port + 10000
            ports.append(port)
    return ports


def _cli(*args: str) -> str:
    return subprocess.run(["redis-cli", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def _wait(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except subprocess.SubprocessError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {START_TIMEOUT_S} s")


def _answers(port: int, command: tuple[str, ...], wanted: str) -> Callable[[], bool]:
    return lambda: wanted in _cli("-p", str(port), *command)


@contextmanager
def local_cluster(masters: int) -> Iterator[str]:
    ports = _free_ports(masters)
    workdir = tempfile.mkdtemp(prefix="reserves-bench-cluster-")
    procs = []
    try:
        for port in ports:
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", f"{workdir}/{port}.conf",
                 "--cluster-node-timeout", "1000", "--dir", workdir, "--save", "",
                 "--appendonly", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            _wait(_answers(port, ("ping",), "PONG"), f"node {port}")
        # slots by hand: `redis-cli --cluster create` wants at least 3 masters
        bounds = [16384 * i // masters for i in range(masters + 1)]
        for i, port in enumerate(ports):
            _cli("-p", str(port), "cluster", "addslotsrange", str(bounds[i]),
                 str(bounds[i + 1] - 1))
        for port in ports[1:]:
            _cli("-p", str(ports[0]), "cluster", "meet", "127.0.0.1", str(port))
        for port in ports:
            _wait(_answers(port, ("cluster", "info"), "cluster_state:ok"), f"cluster node {port}")
        # every node agrees on the slot map (else the client's first MOVED re-reads it and
        # drops connections that other coroutines are using)
        _wait(lambda: subprocess.run(["redis-cli", "--cluster", "check", f"127.0.0.1:{ports[0]}"],
                                     capture_output=True, timeout=30, check=False).returncode == 0,
              "cluster slot map")
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


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
