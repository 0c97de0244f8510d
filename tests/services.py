"""Real services for the tests: from RESERVES_REDIS_URL / RESERVES_DATABASE_URL when set, else
throwaway instances started from the installed binaries, else a skip that says why.

With RESERVES_REQUIRE_SERVICES=1 (as .ci/run sets) a missing service fails instead of skipping.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unavailable(reason: str) -> None:
    if os.environ.get("RESERVES_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service missing: {reason}", pytrace=False)
    pytest.skip(reason)


def wait_for(check: Callable[[], Any], what: str, timeout_s: float,
             poll_s: float = 0.05) -> Any:
    """Poll check until it returns something true, and return that; AssertionError after
    timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def delete_prefix(client: Any, prefix: str, deleter: Any = None) -> None:
    """Delete the prefix's keys found on client; deleter (a cluster client) splits by slot."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for i in range(0, len(keys), 500):
        (deleter or client).delete(*keys[i:i + 500])


def delete_prefix_at(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        delete_prefix(client, prefix)
    finally:
        client.close()


def _wait(check: object, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {START_TIMEOUT_S} s")


@contextmanager
def redis_server(port: int | None = None, extra_args: tuple[str, ...] = (),
                 workdir: str | None = None) -> Iterator[str]:
    """A throwaway redis-server on loopback; yields its URL. A workdir given by the caller is
    kept (a restart can reuse its data), one made here is removed."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed and RESERVES_REDIS_URL is unset: "
                    "skipping the real-Redis tests")
    port = port or free_port()
    own_workdir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="reserves-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, *extra_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    try:
        _wait(client.ping, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway Postgres cluster on loopback (run as the postgres user when we are root)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        unavailable("Postgres binaries are not installed and RESERVES_DATABASE_URL is unset: "
                    "skipping the real-Postgres tests")
    assert initdb is not None and pg_ctl is not None
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
