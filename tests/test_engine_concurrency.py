"""The issue's concurrency test: 500 concurrent reserves of 100 against a total of 10,000 lock
exactly 100 holds and never drive available below 0 -- with several asyncio clients, and with
several OS processes on the real Redis."""

from __future__ import annotations

import asyncio
import multiprocessing
from dataclasses import replace
from typing import Any

from engine.config import Settings
from engine.connection import sync_client
from engine.engine import ReserveEngine
from engine.errors import InsufficientReserve
from engine.service import ReserveService
from tests.engine_helpers import assert_journal_matches, journal, make_service, minor_balance

RUN_ON_CLUSTER = True  # the backend fixture adds a local 3-master Redis Cluster

RESERVES_COUNT = 500
AMOUNT = 100
TOTAL = 10_000
CLIENTS_COUNT = 5
PROCESSES_COUNT = 5
PROCESS_WAIT_S = 60


def assert_exactly_100_holds(service: ReserveService, reserved: list[str]) -> None:
    assert len(reserved) == TOTAL // AMOUNT
    assert len(set(reserved)) == len(reserved)
    assert minor_balance(service, "UGX", "fiat") == (TOTAL, TOTAL)
    locks = [e for e in journal(service) if e.op == "reserve_lock"]
    assert sorted(e.reference for e in locks) == sorted(reserved)
    # the journal records the balances after every lock: available never went below 0
    for event in locks:
        assert event.total_minor >= event.locked_minor
    assert max(e.locked_minor for e in locks) == TOTAL
    assert_journal_matches(service)
    for ref in reserved:
        assert service.get_hold(ref)["state"] == "pending"


async def test_500_concurrent_reserves_from_several_asyncio_clients(
        backend: dict[str, Any]) -> None:
    service = make_service(backend)
    service.top_up_reserve("UGX", str(TOTAL), "fiat", "seed")
    clients = [backend["async_factory"]() for _ in range(CLIENTS_COUNT)]
    engines = [ReserveEngine(c, backend["settings"]) for c in clients]

    async def one(i: int) -> str | None:
        try:
            await engines[i % CLIENTS_COUNT].reserve_amount("UGX", AMOUNT, "fiat", f"c{i}", "swap")
        except InsufficientReserve as error:
            assert error.message == (
                "Insufficient reserve balance. Required: 100.0, Available: 0.0")
            return None
        return f"c{i}"

    try:
        results = await asyncio.gather(*(one(i) for i in range(RESERVES_COUNT)))
    finally:
        for client in clients:
            await client.aclose()
    reserved = [r for r in results if r is not None]
    assert_exactly_100_holds(service, reserved)


async def test_concurrent_repeats_of_one_reference_lock_once(backend: dict[str, Any]) -> None:
    service = make_service(backend)
    service.top_up_reserve("UGX", str(TOTAL), "fiat", "seed")
    clients = [backend["async_factory"]() for _ in range(CLIENTS_COUNT)]
    engines = [ReserveEngine(c, backend["settings"]) for c in clients]
    try:
        results = await asyncio.gather(*(
            engines[i % CLIENTS_COUNT].reserve_amount("UGX", AMOUNT, "fiat", "same", "swap")
            for i in range(100)))
        releases = await asyncio.gather(*(
            engines[i % CLIENTS_COUNT].release_reserve("same") for i in range(50)))
    finally:
        for client in clients:
            await client.aclose()
    assert sum(r.applied for r in results) == 1
    assert sum(r.applied for r in releases) == 1
    assert minor_balance(service, "UGX", "fiat") == (TOTAL, 0)
    assert [e.op for e in journal(service) if e.reference == "same"] == [
        "reserve_lock", "reserve_release"]


def _process_worker(url: str, prefix: str, worker: int, ready: Any, start: Any,
                    out: Any) -> None:
    settings = replace(Settings(), redis_url=url, key_prefix=prefix)

    async def main() -> list[str]:
        engine = ReserveEngine.from_settings(settings)
        share = range(worker, RESERVES_COUNT, PROCESSES_COUNT)

        async def one(i: int) -> str | None:
            try:
                await engine.reserve_amount("UGX", AMOUNT, "fiat", f"p{i}", "swap")
            except InsufficientReserve:
                return None
            return f"p{i}"

        try:
            await engine.get_reserve_account("UGX", "fiat")
            ready.put(worker)
            start.wait(PROCESS_WAIT_S)  # every process starts reserving at once
            results = await asyncio.gather(*(one(i) for i in share))
        finally:
            await engine.close()
        return [r for r in results if r is not None]

    out.put(asyncio.run(main()))


def test_500_concurrent_reserves_from_several_processes(redis_url: str, key_prefix: str) -> None:
    settings = replace(Settings(), redis_url=redis_url, key_prefix=key_prefix)
    client = sync_client(settings)
    try:
        service = ReserveService(client, settings)
        service.top_up_reserve("UGX", str(TOTAL), "fiat", "seed")
        ctx = multiprocessing.get_context("spawn")
        ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_process_worker,
                             args=(redis_url, key_prefix, w, ready, start, out))
                 for w in range(PROCESSES_COUNT)]
        for p in procs:
            p.start()
        assert sorted(ready.get(timeout=PROCESS_WAIT_S) for _ in procs) == list(
            range(PROCESSES_COUNT))
        start.set()
        reserved = [ref for _ in procs for ref in out.get(timeout=PROCESS_WAIT_S)]
        for p in procs:
            p.join(timeout=PROCESS_WAIT_S)
            assert p.exitcode == 0
        assert_exactly_100_holds(service, reserved)
    finally:
        for key in client.scan_iter(match=f"{key_prefix}:*"):
            client.delete(key)
        client.close()
