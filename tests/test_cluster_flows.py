"""The wallet flows on a real local Redis Cluster (3 masters, 16 shards): a swap and a sell
whose accounts sit in different slots run their holds as a saga; a swap whose process dies
half-way through the saga is undone by recovery, or finished by the client's retry, with no
money created or lost. (tests/test_cluster.py covers the engine's saga itself.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest

from engine import limits as engine_limits
from engine.config import Settings
from engine.connection import async_client, sync_client
from engine.flows import limits
from engine.references import flow_reference
from tests.cluster import LocalCluster, redis_cluster
from tests.flows_support import Rig, make_rig

pytestmark = pytest.mark.real

CURRENCIES = ("USDT", "UGX")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with redis_cluster(masters=3) as started:
        yield started


@pytest.fixture
async def rig(cluster: LocalCluster, key_prefix: str) -> AsyncIterator[Rig]:
    settings = replace(Settings(), redis_url=cluster.url, redis_cluster=True, shard_count=16,
                       key_prefix=key_prefix)
    sync = sync_client(settings)
    client = async_client(settings)
    rig = make_rig({"name": "cluster", "sync": sync, "settings": settings}, client)
    try:
        yield rig
    finally:
        await client.aclose()
        for key in list(sync.scan_iter(match=f"{key_prefix}:*", count=1000)):
            sync.delete(key)
        sync.close()


def _user_in_another_slot(rig: Rig, reserves: list[str]) -> str:
    """A user whose wallets share no shard with the reserves: its holds need the saga."""
    keys = rig.engine.ops.keys
    taken = {keys.shard_of(label) for label in reserves}
    for i in range(100):
        user = f"u{i}"
        if not {keys.shard_of(f"USER_{user}_{c}") for c in CURRENCIES} & taken:
            return user
    raise AssertionError("no user outside the reserves' shards")


async def _funded(rig: Rig) -> tuple[str, dict[str, int]]:
    user = _user_in_another_slot(rig, ["RESERVE_USDT_CRYPTO", "RESERVE_UGX_FIAT"])
    assert rig.engine.ops.keys.shard_of("RESERVE_USDT_CRYPTO") != rig.engine.ops.keys.shard_of(
        "RESERVE_UGX_FIAT")
    await rig.seed_reserve("USDT", "1000")
    await rig.seed_reserve("UGX", "10000000")
    await rig.deposit(user, "USDT", "100")
    return user, {"USDT": 1_100_000_000, "UGX": 10_000_000}  # what came in, minor units


async def _labels(rig: Rig, user: str) -> dict[str, tuple[int, int]]:
    labels = ["RESERVE_USDT_CRYPTO", "RESERVE_UGX_FIAT", f"USER_{user}_USDT", f"USER_{user}_UGX"]
    return {label: await rig.minor(label) for label in labels}


async def _assert_conserved(rig: Rig, inflow: dict[str, int]) -> None:
    """Per currency, all accounts together hold what came in; nothing is locked."""
    for currency in CURRENCIES:
        assert (currency, *await rig.currency_sum(currency)) == (currency, inflow[currency], 0)


async def _open_sagas(rig: Rig) -> int:
    keys = rig.engine.ops.keys
    return sum(rig.backend["sync"].zcard(f"{keys.tag(s)}:sagas") for s in range(16))


async def test_cross_slot_swap_and_sell(rig: Rig) -> None:
    user, inflow = await _funded(rig)
    swap = await rig.wallet.swaps.create(user, "USDT", "UGX", "10", "s1")
    assert swap["state"] == "completed"
    assert {leg["account"] for leg in swap["legs"]} == {
        "RESERVE_USDT_CRYPTO", "RESERVE_UGX_FIAT", f"USER_{user}_USDT"}
    # 10 USDT * 3700 * 0.99 = 36630 UGX
    assert await _labels(rig, user) == {
        "RESERVE_USDT_CRYPTO": (1_010_000_000, 0), "RESERVE_UGX_FIAT": (10_000_000 - 36_630, 0),
        f"USER_{user}_USDT": (90_000_000, 0), f"USER_{user}_UGX": (36_630, 0)}

    sell = await rig.wallet.mobile_money.sell(user, "USDT", "UGX", "5", "+256700000001", "m1")
    assert (sell["state"], sell["fiat_amount"]) == ("pending", 18_315)
    assert await rig.minor(f"USER_{user}_USDT") == (90_000_000, 5_000_000)
    body, headers = rig.provider.signed_callback(sell["provider_tx_id"], "success")
    assert (await rig.wallet.mobile_money.callback(body, headers))["state"] == "completed"
    assert await _labels(rig, user) == {
        "RESERVE_USDT_CRYPTO": (1_015_000_000, 0),
        "RESERVE_UGX_FIAT": (10_000_000 - 36_630 - 18_315, 0),
        f"USER_{user}_USDT": (85_000_000, 0), f"USER_{user}_UGX": (36_630, 0)}
    inflow["UGX"] -= 18_315  # paid out by mobile money

    failed = await rig.wallet.mobile_money.sell(user, "USDT", "UGX", "5", "+256700000001", "m2")
    body, headers = rig.provider.signed_callback(failed["provider_tx_id"], "failed")
    assert (await rig.wallet.mobile_money.callback(body, headers))["state"] == "failed"
    await _assert_conserved(rig, inflow)
    assert await _open_sagas(rig) == 0
    assert await rig.wallet.store.open_count() == 0


class Crash(BaseException):
    """The process dying: not an Exception, so no except-clause of the saga rolls back."""


def _crash_on_second_leg(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    real = rig.engine.ops.reserve
    held: list[str] = []

    def reserve(spec: Any, amount_minor: int, ref: str, *args: Any) -> Any:
        if held:
            raise Crash
        held.append(ref)
        return (yield from real(spec, amount_minor, ref, *args))

    monkeypatch.setattr(rig.engine.ops, "reserve", reserve)
    return held


async def test_swap_dying_half_way_is_undone_by_recovery(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    user, inflow = await _funded(rig)
    before = await _labels(rig, user)
    held = _crash_on_second_leg(rig, monkeypatch)
    with pytest.raises(Crash):
        await rig.wallet.swaps.create(user, "USDT", "UGX", "10", "s1")
    monkeypatch.undo()
    assert held == [flow_reference("swap", "s1", "from")]
    assert (await rig.minor("RESERVE_USDT_CRYPTO"))[1] == 10_000_000  # stranded, for now
    assert await _open_sagas(rig) == 1
    rig.clock.advance_s(limits.swap_hold_ttl_s)
    assert engine_limits.saga_stale_s <= limits.swap_hold_ttl_s
    assert await rig.engine.recover_sagas() == 1  # the engine's saga recovery releases the leg
    assert (await rig.wallet.recover()).settled_count == 1  # the flow records its failure
    assert (await rig.wallet.swaps.get("s1"))["state"] == "failed"
    assert await _labels(rig, user) == before
    await _assert_conserved(rig, inflow)
    assert await _open_sagas(rig) == 0
    assert await rig.wallet.store.open_count() == 0


async def test_swap_dying_half_way_is_finished_by_the_retry(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    user, inflow = await _funded(rig)
    _crash_on_second_leg(rig, monkeypatch)
    with pytest.raises(Crash):
        await rig.wallet.swaps.create(user, "USDT", "UGX", "10", "s1")
    monkeypatch.undo()
    retried = await rig.wallet.swaps.create(user, "USDT", "UGX", "10", "s1")
    assert retried["state"] == "completed"
    assert await _labels(rig, user) == {
        "RESERVE_USDT_CRYPTO": (1_010_000_000, 0), "RESERVE_UGX_FIAT": (10_000_000 - 36_630, 0),
        f"USER_{user}_USDT": (90_000_000, 0), f"USER_{user}_UGX": (36_630, 0)}
    await _assert_conserved(rig, inflow)
    rig.clock.advance_s(limits.swap_hold_ttl_s)
    assert await rig.engine.recover_sagas() == 0  # the retry settled the saga
    assert (await rig.wallet.recover()).looked_at_count == 0
    await _assert_conserved(rig, inflow)
