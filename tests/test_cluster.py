"""The engine on a real local Redis Cluster (3 masters): single-account scripts on their slot,
cross-slot multi-leg holds as a saga with recovery, NOSCRIPT after a script flush."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal

import pytest

from engine.config import Settings, detect_cluster
from engine.connection import async_client, sync_client
from engine.engine import ReserveEngine
from engine.commands import Batch
from engine.errors import HoldNotFound, InsufficientReserve, ReferenceConflict
from engine.saga import recover_sagas, reserve_saga
from engine.service import ReserveService
from engine.types import HoldState
from tests.cluster import LocalCluster, redis_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with redis_cluster(masters=3) as started:
        yield started


@pytest.fixture
def settings(cluster: LocalCluster, key_prefix: str) -> Settings:
    return replace(Settings(), redis_url=cluster.url, redis_cluster=True, shard_count=16,
                   key_prefix=key_prefix)


@pytest.fixture
def service(settings: Settings) -> Iterator[ReserveService]:
    svc = ReserveService(sync_client(settings), settings)
    yield svc
    svc.client.close()


def test_cluster_mode_is_detected_from_the_node(cluster: LocalCluster, redis_url: str) -> None:
    assert detect_cluster(cluster.url) is True
    assert detect_cluster(redis_url) is False


def test_accounts_spread_over_the_masters(service: ReserveService) -> None:
    shards = {service.ops.keys.account(service.ops.reserve_spec(c.code, None).label).shard
              for c in service.registry}
    assert len(shards) > 1  # the nine reserves do not all share one slot
    slots = {service.client.keyslot(service.ops.keys.stream(s)) for s in shards}
    nodes = {service.client.nodes_manager.get_node_from_slot(slot).name for slot in slots}
    assert len(nodes) >= 2


def test_operations_on_the_cluster(service: ReserveService) -> None:
    assert service.top_up_reserve("USDT", Decimal("100"), "crypto", "t1")["transaction_id"] > 0
    held = service.reserve_amount("USDT", Decimal("30"), "crypto", "h1", "swap")
    assert held["locked_balance"] == Decimal("30")
    assert service.commit_reserve("h1", Decimal("10"))["hold_state"] == "committed"
    balance = service.get_reserve_balance("USDT", "crypto")
    assert (balance["total_balance"], balance["locked_balance"]) == (Decimal("90"), Decimal("0"))
    with pytest.raises(InsufficientReserve):
        service.withdraw_from_reserve("USDT", Decimal("90.000001"), "crypto", "w1")
    # the journal lives in the account's own shard stream
    stream = service.ops.keys.account("RESERVE_USDT_CRYPTO").stream
    ops = [fields["op"] for _, fields in service.client.xrange(stream)]
    assert ops == ["account_open", "reserve_topup", "reserve_lock", "reserve_commit"]


def test_noscript_after_flush_is_reloaded(service: ReserveService) -> None:
    service.top_up_reserve("BTC", Decimal("1"), "crypto", "t1")
    for node in service.client.get_nodes():
        service.client.execute_command("SCRIPT", "FLUSH", target_nodes=node)
    assert not any(service.client.execute_command("SCRIPT", "EXISTS", service.driver.scripts["reserve"].sha, target_nodes=node)[0] for node in service.client.get_nodes())
    assert service.reserve_amount("BTC", Decimal("0.5"), "crypto", "h1", "swap")["success"]


def _cross_slot_legs(service: ReserveService) -> list:
    usdt = service.ops.reserve_spec("USDT", "crypto")
    for code in ("UGX", "KES", "NGN", "EUR", "USD"):
        other = service.ops.reserve_spec(code, "fiat")
        if service.ops.keys.shard_of(other.label) != service.ops.keys.shard_of(usdt.label):
            return [(usdt, 5_000_000, "sw1_from"), (other, 500, "sw1_to")]
    raise AssertionError("no fiat reserve in another shard")


def test_cross_slot_reserve_many_is_all_or_nothing(service: ReserveService) -> None:
    legs = _cross_slot_legs(service)
    service.run(service.ops.top_up(legs[0][0], 10_000_000, "t1"))
    service.run(service.ops.top_up(legs[1][0], 100, "t2"))  # the second leg cannot be held
    streams = {service.ops.keys.account(spec.label).stream for spec, _, _ in legs}
    journal_before = {s: service.client.xrange(s) for s in streams}
    with pytest.raises(InsufficientReserve):
        service.run(service.ops.reserve_many(legs, "swap"))
    # refused before any leg was held, as one slot refuses: nothing locked or journalled
    assert [service.run(service.ops.balance(spec)).locked_minor for spec, _, _ in legs] == [0, 0]
    assert {s: service.client.xrange(s) for s in streams} == journal_before
    with pytest.raises(HoldNotFound):
        service.get_hold("sw1_from")
    service.run(service.ops.top_up(legs[1][0], 1000, "t3"))
    held = service.run(service.ops.reserve_many(legs, "swap"))  # the references stayed free
    assert [r.hold.state for r in held] == [HoldState.pending, HoldState.pending]


def test_saga_refused_half_way_by_a_racing_caller_rolls_back(service: ReserveService) -> None:
    legs = _cross_slot_legs(service)
    service.run(service.ops.top_up(legs[0][0], 10_000_000, "t1"))
    service.run(service.ops.top_up(legs[1][0], 1000, "t2"))
    saga = reserve_saga(service.ops, legs, "swap", None, None)
    reply = None
    with pytest.raises(InsufficientReserve) as info:
        while True:
            command = saga.send(reply)
            reply = service.driver.execute(command)
            if isinstance(command, Batch):  # the checks passed: another caller takes the funds
                service.run(service.ops.withdraw(legs[1][0], 600, "racer"))
    # the message one slot gives: the leg's amount against what the account has now
    spec = legs[1][0]
    expected = service.ops._insufficient(service.run(service.ops.balance(spec)), 500)
    assert info.value.message == expected.message
    assert [service.run(service.ops.balance(s)).locked_minor for s, _, _ in legs] == [0, 0]
    assert service.get_hold("sw1_from")["state"] == "released"  # the held leg was rolled back
    stream = service.ops.keys.account(legs[0][0].label).stream
    events = [f for _, f in service.client.xrange(stream) if f["ref"] == "sw1_from"]
    assert [(f["op"], f["meta"]) for f in events] == [
        ("reserve_lock", ""), ("reserve_release", '{"saga":"rollback"}')]
    with pytest.raises(ReferenceConflict):  # its references are spent, one of them held
        service.run(service.ops.reserve_many(legs, "swap"))
    assert service.run(recover_sagas(service.ops, older_than_s=0)) == 0  # settled


def test_saga_abandoned_half_way_is_undone_by_recovery(service: ReserveService) -> None:
    legs = _cross_slot_legs(service)
    service.run(service.ops.top_up(legs[0][0], 10_000_000, "t1"))
    service.run(service.ops.top_up(legs[1][0], 1000, "t2"))
    # drive the saga by hand and stop after the first leg is held: a caller that crashed
    saga = reserve_saga(service.ops, legs, "swap", None, None)
    reply = None
    while True:
        command = saga.send(reply)
        reply = service.driver.execute(command)
        if service.run(service.ops.balance(legs[0][0])).locked_minor:
            break
    saga.close()
    assert service.run(service.ops.balance(legs[0][0])).locked_minor == 5_000_000
    assert service.run(recover_sagas(service.ops, older_than_s=0)) == 1
    assert service.run(service.ops.balance(legs[0][0])).locked_minor == 0
    assert service.run(service.ops.balance(legs[1][0])).locked_minor == 0
    assert service.run(recover_sagas(service.ops, older_than_s=0)) == 0  # settled once


def test_concurrent_reserves_never_oversell_on_the_cluster(settings: Settings) -> None:
    async def scenario() -> tuple[int, int]:
        engine = ReserveEngine(async_client(settings), settings)
        await engine.top_up_reserve("USDT", "10000", "crypto", "seed")
        results = await asyncio.gather(
            *[engine.reserve_amount("USDT", "100", "crypto", f"c{i}", "swap") for i in range(300)],
            return_exceptions=True,
        )
        ok = sum(not isinstance(r, BaseException) for r in results)
        assert all(isinstance(r, InsufficientReserve) for r in results
                   if isinstance(r, BaseException))
        balance = await engine.get_reserve_balance("USDT", "crypto")
        await engine.close()
        return ok, balance.locked_minor

    ok, locked_minor = asyncio.run(scenario())
    assert ok == 100
    assert locked_minor == 10_000_000_000


@pytest.mark.skipif(os.environ.get("RESERVES_SKIP_CLUSTER") == "1", reason="RESERVES_SKIP_CLUSTER=1")
def test_sweeper_and_list_span_every_shard(service: ReserveService) -> None:
    service.top_up_reserve("USDT", Decimal("1"), "crypto", "a")
    service.top_up_reserve("UGX", Decimal("1"), "fiat", "b")
    labels = service.run(service.ops.list_labels())
    assert labels == ["RESERVE_UGX_FIAT", "RESERVE_USDT_CRYPTO"]
    assert service.sweep().accounts_count == 2


# -- the hot path's straight-to-node calls (engine/batching.py) -----------------------------------


def _count_routed(client: object, counts: dict[str, int]) -> None:
    """Count the commands that go through RedisCluster's own routing layers."""
    routed = client.execute_command  # type: ignore[attr-defined]

    async def counting(*args: object, **kwargs: object) -> object:
        name = str(args[0]).upper()
        counts[name] = counts.get(name, 0) + 1
        return await routed(*args, **kwargs)

    client.execute_command = counting  # type: ignore[attr-defined]


async def _cycles(engine: ReserveEngine, prefix: str, count: int) -> None:
    """count concurrent reserves across accounts and reference shards, then their commits."""
    held = await asyncio.gather(*(
        engine.reserve_amount(code, "1", kind, f"{prefix}{i}", "swap")
        for i in range(count) for code, kind in (("USDT", "crypto"), ("UGX", "fiat"))
        if i % 2 == (code == "UGX")))
    assert all(r.applied for r in held)
    committed = await asyncio.gather(*(engine.commit_reserve(f"{prefix}{i}")
                                       for i in range(count)))
    assert all(r.hold.state is HoldState.committed for r in committed)


async def _assert_committed(engine: ReserveEngine, units: int) -> None:
    """Both accounts of _cycles (1000 each) gave `units` of 1 and hold nothing."""
    for code, kind, unit_minor in (("USDT", "crypto", 1_000000), ("UGX", "fiat", 1)):
        balance = await engine.get_reserve_balance(code, kind)
        assert (balance.total_minor, balance.locked_minor) == ((1000 - units) * unit_minor, 0)


def test_batches_and_index_claims_go_straight_to_the_slots_node(settings: Settings) -> None:
    from engine.batching import FastPackConnection

    async def scenario() -> dict[str, int]:
        engine = ReserveEngine(async_client(settings), settings)
        await engine.top_up_reserve("USDT", "1000", "crypto", "seed")
        await engine.top_up_reserve("UGX", "1000", "fiat", "seed")
        await _cycles(engine, "warm", 4)
        for name in ("hold_batch", "reserve", "commit"):  # on every master: no NOSCRIPT below
            await engine.client.script_load(engine.driver.scripts[name].script)
        counts: dict[str, int] = {}
        _count_routed(engine.client, counts)
        for wave in range(10):  # 40 batches at least
            await _cycles(engine, f"s{wave}-", 20)
        nodes = engine.client.get_nodes()
        connections = [c for node in nodes for c in node._connections]
        assert connections and all(type(c) is FastPackConnection for c in connections)
        await _assert_committed(engine, 102)
        await engine.close()
        return counts

    counts = asyncio.run(scenario())
    # none of the 400 operations' script calls, nor the index claims, went the routed way
    assert not {"EVALSHA", "HSETNX", "HGET"} & set(counts), counts


def test_a_stale_slot_map_and_a_script_flush_are_rerouted(settings: Settings) -> None:
    """The node a batch goes to is taken from the client's slot map; when that is wrong (MOVED)
    or the node lacks the script (NOSCRIPT), the batch goes through RedisCluster's routing,
    which follows the redirect or loads the script: every caller still gets its result."""

    async def scenario() -> dict[str, int]:
        engine = ReserveEngine(async_client(settings), settings)
        await engine.top_up_reserve("USDT", "1000", "crypto", "seed")
        await engine.top_up_reserve("UGX", "1000", "fiat", "seed")
        await _cycles(engine, "warm", 4)
        client = engine.client
        right = client.get_node_from_key
        primaries = client.get_primaries()

        def wrong(key: str) -> object:  # another master than the slot's own
            owner = right(key)
            return next(n for n in primaries if n.name != owner.name)

        client.get_node_from_key = wrong
        counts: dict[str, int] = {}
        _count_routed(client, counts)
        await _cycles(engine, "m", 50)
        client.get_node_from_key = right
        for node in primaries:
            await client.execute_command("SCRIPT", "FLUSH", target_nodes=node)
        await _cycles(engine, "n", 50)
        await _assert_committed(engine, 52)
        await engine.close()
        return counts

    counts = asyncio.run(scenario())
    assert counts.get("EVALSHA", 0) > 0 and counts.get("HSETNX", 0) > 0, counts
