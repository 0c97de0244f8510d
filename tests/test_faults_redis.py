"""Faults on the Redis side: a restart with AOF on, and Redis unreachable.

With `appendfsync always` every acknowledged script survives a crash (kill -9) of Redis; with
`everysec` up to about a second of acknowledged writes may be lost (the README documents it).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import replace

import pytest

from engine.config import Settings
from engine.connection import sync_client
from engine.errors import Unavailable
from engine.service import ReserveService
from tests.services import free_port, redis_server


def _replay(service: ReserveService) -> tuple[int, int]:
    """Operations whose replies we saw; returns (total, locked) they add up to."""
    service.top_up_reserve("USDT", "1000", "crypto", "seed")
    total, locked = 1_000_000_000, 0
    for i in range(200):
        service.reserve_amount("USDT", "1", "crypto", f"h{i}", "swap")
        locked += 1_000_000
        if i % 3 == 0:
            service.commit_reserve(f"h{i}")
            total -= 1_000_000
            locked -= 1_000_000
        elif i % 3 == 1:
            service.release_reserve(f"h{i}")
            locked -= 1_000_000
    return total, locked


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_redis_killed_and_restarted_with_aof_keeps_acknowledged_operations(fsync: str) -> None:
    port = free_port()
    aof_args = ("--appendonly", "yes", "--appendfsync", fsync)
    workdir = tempfile.mkdtemp(prefix="reserves-aof-")
    try:
        _crash_and_recover(port, aof_args, workdir, fsync)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _crash_and_recover(port: int, aof_args: tuple[str, ...], workdir: str, fsync: str) -> None:
    with redis_server(port=port, extra_args=aof_args, workdir=workdir) as url:
        settings = replace(Settings(), redis_url=url, key_prefix="aof")
        service = ReserveService(sync_client(settings), settings)
        total, locked = _replay(service)
        events = service.client.xlen(service.ops.keys.stream(0))
        if fsync == "everysec":
            time.sleep(1.5)  # the documented window: writes older than ~1 s are on disk
        pid = int(service.client.info("server")["process_id"])
        service.client.close()
        subprocess.run(["kill", f"-{signal.SIGKILL.value}", str(pid)], check=True)
    # a new server on the same data directory replays the append-only file
    with redis_server(port=port, extra_args=aof_args, workdir=workdir) as url:
        settings = replace(Settings(), redis_url=url, key_prefix="aof")
        service = ReserveService(sync_client(settings), settings)
        balance = service.run(service.ops.balance(service.ops.reserve_spec("USDT", "crypto")))
        assert (balance.total_minor, balance.locked_minor) == (total, locked)
        # the journal kept every event too: the persister will find them
        stream = service.ops.keys.stream(0)
        assert service.client.xlen(stream) == events
        service.client.close()


def test_redis_unreachable_is_a_clear_error_and_changes_nothing() -> None:
    settings = replace(Settings(), redis_url=f"redis://127.0.0.1:{free_port()}/0")
    service = ReserveService(sync_client(settings), settings)
    with pytest.raises(Unavailable, match="Redis is unavailable"):
        service.reserve_amount("USDT", "1", "crypto", "h", "swap")
