"""Throwaway local services, one owner for the benchmarks and the tests: free loopback ports, a
redis-server, a Redis Cluster of redis-server nodes, a Postgres cluster, the waits until each
answers, and the stop of a child process such as `reserves serve`.

It lives in the installed `benchmarks` package because `reserves bench` runs without tests/.
tests/services.py, tests/cluster.py and tests/api_server.py build on it and add the tests' own
rule for a missing binary (skip, or fail under RESERVES_REQUIRE_SERVICES=1); here a missing
binary is ServiceMissing."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0  # a redis-server node after SIGTERM / SIGKILL
KILL_WAIT_S = 5.0  # a process group after SIGKILL
CLI_TIMEOUT_S = 60
CLUSTER_BUS_OFFSET = 10_000  # a cluster node's bus listens on its port + 10000
CLUSTER_SLOTS = 16_384
CLUSTER_NODE_TIMEOUT_MS = 1_000


class ServiceMissing(RuntimeError):
    """A binary that the service needs is not installed."""


def missing(*binaries: str) -> list[str]:
    """The binaries of the list that are not on PATH."""
    return [name for name in binaries if shutil.which(name) is None]


def _require(*binaries: str) -> None:
    absent = missing(*binaries)
    if absent:
        raise ServiceMissing(f"not installed: {', '.join(absent)}")


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_ports(count: int) -> list[int]:
    """count distinct free ports whose cluster bus port (port + 10000) also exists."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port + CLUSTER_BUS_OFFSET < 65536:
            ports.append(port)
    return ports


def poll(check: Callable[[], Any], timeout_s: float, poll_s: float = 0.05,
         errors: tuple[type[BaseException], ...] = ()) -> Any:
    """check's first true value within timeout_s, else None. An exception listed in errors
    counts as "not yet"; any other propagates."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = check()
        except errors:
            value = None
        if value:
            return value
        time.sleep(poll_s)
    return None


def wait_ready(check: Callable[[], Any], what: str, timeout_s: float = START_TIMEOUT_S,
               poll_s: float = 0.05,
               errors: tuple[type[BaseException], ...] = (Exception,)) -> Any:
    """Until check returns something true (a service starting up: errors mean "not yet");
    RuntimeError after timeout_s."""
    value = poll(check, timeout_s, poll_s, errors)
    if not value:
        raise RuntimeError(f"{what} did not start within {timeout_s} s")
    return value


# -- redis-server ------------------------------------------------------------------------------

@contextmanager
def redis_server(port: int | None = None, extra_args: tuple[str, ...] = (),
                 workdir: str | None = None) -> Iterator[str]:
    """A throwaway redis-server on loopback, without persistence unless extra_args turn it on;
    yields its URL. A workdir given by the caller is kept (a restart can reuse its data), one
    made here is removed."""
    _require("redis-server")
    port = port or free_port()
    own_workdir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="reserves-redis-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir, *extra_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        wait_ready(client.ping, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=STOP_TIMEOUT_S)
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def redis_cli(*args: str) -> str:
    """redis-cli's output; CalledProcessError when it fails (e.g. cannot connect)."""
    return subprocess.run(["redis-cli", *args], check=True, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S).stdout


def _answers(port: int, command: tuple[str, ...], wanted: str) -> Callable[[], bool]:
    return lambda: wanted in redis_cli("-p", str(port), *command)


# -- Redis Cluster -----------------------------------------------------------------------------

@dataclass
class LocalCluster:
    """redis-server nodes with --cluster-enabled yes on loopback, one directory each."""

    ports: list[int]
    workdir: str
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start_node(self, port: int) -> None:
        node_dir = f"{self.workdir}/{port}"
        os.makedirs(node_dir, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", f"{node_dir}/nodes.conf", "--cluster-node-timeout",
             str(CLUSTER_NODE_TIMEOUT_MS), "--dir", node_dir, "--save", "", *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def kill_node(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill_node(port)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _slots_by_hand(ports: list[int]) -> None:
    """Each master an equal range of slots, joined by CLUSTER MEET (for 1 or 2 masters, which
    `redis-cli --cluster create` refuses)."""
    bounds = [CLUSTER_SLOTS * i // len(ports) for i in range(len(ports) + 1)]
    for i, port in enumerate(ports):
        redis_cli("-p", str(port), "cluster", "addslotsrange", str(bounds[i]),
                  str(bounds[i + 1] - 1))
    for port in ports[1:]:
        redis_cli("-p", str(ports[0]), "cluster", "meet", "127.0.0.1", str(port))


@contextmanager
def redis_cluster(masters: int = 3, replicas: int = 0,
                  extra_args: tuple[str, ...] = ()) -> Iterator[LocalCluster]:
    """A local Redis Cluster of masters * (1 + replicas) nodes on free loopback ports, every
    node agreeing on the slot map before it is yielded; torn down after."""
    _require("redis-server", "redis-cli")
    ports = cluster_ports(masters * (1 + replicas))
    cluster = LocalCluster(ports, tempfile.mkdtemp(prefix="reserves-cluster-"),
                           extra_args=extra_args)
    try:
        for port in ports:
            cluster.start_node(port)
        for port in ports:
            wait_ready(_answers(port, ("ping",), "PONG"), f"node {port}",
                       errors=(subprocess.SubprocessError,))
        if replicas == 0 and masters < 3:
            _slots_by_hand(ports)
        else:
            redis_cli("--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                      "--cluster-replicas", str(replicas), "--cluster-yes")
        for port in ports:
            wait_ready(_answers(port, ("cluster", "info"), "cluster_state:ok"),
                       f"cluster node {port}", poll_s=0.1, errors=(subprocess.SubprocessError,))
        # every node agrees on the slot map (else a client's first MOVED re-reads it and drops
        # connections that other coroutines are using)
        wait_ready(lambda: subprocess.run(
            ["redis-cli", "--cluster", "check", f"127.0.0.1:{ports[0]}"], capture_output=True,
            timeout=CLI_TIMEOUT_S, check=False).returncode == 0, "cluster slot map", poll_s=0.1,
            errors=(subprocess.SubprocessError,))
        yield cluster
    finally:
        cluster.stop()


# -- child processes (`reserves serve`, `reserves persist`) ------------------------------------

def serve_argv(port: int, workers: int, *args: str) -> list[str]:
    """`reserves serve` on loopback, run by this interpreter (whatever PATH holds)."""
    return [sys.executable, "-m", "engine.cli", "serve", "--host", "127.0.0.1", "--port",
            str(port), "--workers", str(workers), *args]


def wait_healthy(url: str, process: subprocess.Popen[bytes], read_log: Callable[[], str],
                 timeout_s: float = START_TIMEOUT_S, healthy: bool = True,
                 poll_s: float = 0.1) -> None:
    """Until url's /health says 200 (healthy) or answers at all (not healthy: Redis may be
    down). RuntimeError with the end of the log when the process exits or time runs out."""

    def answered() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"reserves serve exited with {process.returncode}:\n"
                               f"{read_log()[-4000:]}")
        status = httpx.get(url + "/health", timeout=1.0).status_code
        return status == 200 or not healthy

    if not poll(answered, timeout_s, poll_s, errors=(httpx.HTTPError,)):
        raise RuntimeError(f"reserves serve not healthy after {timeout_s} s:\n"
                           f"{read_log()[-4000:]}")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float, group: bool = False) -> None:
    """SIGTERM, up to timeout_s to exit, then SIGKILL. group: the whole process group (a child
    started with start_new_session=True, e.g. uvicorn and its workers)."""
    if proc.poll() is not None:
        return
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(timeout=KILL_WAIT_S)


# -- Postgres ----------------------------------------------------------------------------------

def pg_binary(name: str) -> str | None:
    """A Postgres server binary: Debian keeps them out of PATH, the newest version wins."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway Postgres cluster on loopback (run as the postgres user when we are root);
    yields its URL."""
    initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise ServiceMissing("not installed: Postgres (initdb, pg_ctl)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="reserves-pg-")
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(workdir, "data")
    subprocess.run([*prefix, initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(
        [*prefix, pg_ctl, "-D", data, "-w", "-l", os.path.join(workdir, "log"), "-o",
         f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
        check=True, stdout=subprocess.DEVNULL,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", data, "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(workdir, ignore_errors=True)
