"""Real services for the tests: from RESERVES_REDIS_URL / RESERVES_DATABASE_URL when set, else
throwaway instances started from the installed binaries, else a skip that says why.

With RESERVES_REQUIRE_SERVICES=1 (as .ci/run sets) a missing service fails instead of skipping.
The launchers themselves (ports, processes, waits) live in benchmarks/services.py, shared with
`reserves bench`; this module adds the skip-or-fail rule and the tests' key clean-up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from benchmarks import services as launch
from benchmarks.services import START_TIMEOUT_S, free_port

__all__ = ["START_TIMEOUT_S", "delete_prefix", "delete_prefix_at", "free_port",
           "postgres_server", "redis_server", "unavailable", "wait_for"]


def unavailable(reason: str) -> None:
    if os.environ.get("RESERVES_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service missing: {reason}", pytrace=False)
    pytest.skip(reason)


def wait_for(check: Callable[[], Any], what: str, timeout_s: float,
             poll_s: float = 0.05) -> Any:
    """Poll check until it returns something true, and return that; AssertionError after
    timeout_s."""
    value = launch.poll(check, timeout_s, poll_s)
    if not value:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
    return value


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


@contextmanager
def redis_server(port: int | None = None, extra_args: tuple[str, ...] = (),
                 workdir: str | None = None) -> Iterator[str]:
    """A throwaway redis-server on loopback; yields its URL. A workdir given by the caller is
    kept (a restart can reuse its data), one made here is removed."""
    if launch.missing("redis-server"):
        unavailable("redis-server is not installed and RESERVES_REDIS_URL is unset: "
                    "skipping the real-Redis tests")
    with launch.redis_server(port, extra_args, workdir) as url:
        yield url


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway Postgres cluster on loopback (run as the postgres user when we are root)."""
    if launch.pg_binary("initdb") is None or launch.pg_binary("pg_ctl") is None:
        unavailable("Postgres binaries are not installed and RESERVES_DATABASE_URL is unset: "
                    "skipping the real-Postgres tests")
    with launch.postgres_server() as url:
        yield url
