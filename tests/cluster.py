"""A real local Redis Cluster for the tests: redis-server nodes with --cluster-enabled yes on
free loopback ports, joined by `redis-cli --cluster create --cluster-yes`, torn down after."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.services import START_TIMEOUT_S, free_port, unavailable


@dataclass
class LocalCluster:
    ports: list[int]
    workdir: str
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start_node(self, port: int) -> None:
        node_dir = f"{self.workdir}/{port}"
        subprocess.run(["mkdir", "-p", node_dir], check=True)
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", f"{node_dir}/nodes.conf", "--cluster-node-timeout", "1000",
             "--dir", node_dir, "--save", "", *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def kill_node(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=10)

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill_node(port)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _cli(*args: str) -> str:
    return subprocess.run(["redis-cli", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def _wait_ok(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            info = _cli("-p", str(port), "cluster", "info")
            if "cluster_state:ok" in info:
                return
        except subprocess.SubprocessError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"cluster node {port} not ok within {START_TIMEOUT_S} s")


@contextmanager
def redis_cluster(masters: int = 3, replicas: int = 0,
                  extra_args: tuple[str, ...] = ()) -> Iterator[LocalCluster]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        unavailable("redis-server / redis-cli are not installed: skipping the Redis Cluster tests")
    count = masters * (1 + replicas)
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        # the cluster bus listens on port + 10000: keep both free and distinct
        if port not in ports and port + 10000 < 65536:
            ports.append(port)
    cluster = LocalCluster(ports, tempfile.mkdtemp(prefix="reserves-cluster-"),
                           extra_args=extra_args)
    try:
        for port in ports:
            cluster.start_node(port)
        for port in ports:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                try:
                    _cli("-p", str(port), "ping")
                    break
                except subprocess.SubprocessError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        if masters == 1 and replicas == 0:
            _cli("-p", str(ports[0]), "cluster", "addslotsrange", "0", "16383")
        else:
            _cli("--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                 "--cluster-replicas", str(replicas), "--cluster-yes")
        for port in ports:
            _wait_ok(port)
        yield cluster
    finally:
        cluster.stop()
