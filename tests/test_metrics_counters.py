"""The design document's key metrics "cache hit rates" and "operation success rates for swaps
and trading": the engine's caches count hits and misses (exported as counters at the scrape),
and each flow that ends counts once by kind and terminal state."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest

from engine import caches
from engine.caches import FifoCache
from engine.engine import ReserveEngine
from engine.errors import InsufficientReserve
from engine.flows import limits as flow_limits
from engine.flows.errors import RecordedFailure
from tests.flows_support import Rig, make_rig

CACHES = ("accounts", "hold_labels")


def _counts(engine: ReserveEngine) -> dict[str, tuple[int, int]]:
    ops = engine.ops
    by_name = {"accounts": ops._accounts, "hold_labels": ops._hold_labels}
    return {name: (c.hits, c.misses) for name, c in by_name.items()}


def _delta(before: dict[str, tuple[int, int]],
           after: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in after
            if after[k] != before[k]}


def _exported() -> dict[str, tuple[float, float]]:
    return {name: (REGISTRY.get_sample_value("reserves_cache_hits_total", {"cache": name}) or 0.0,
                   REGISTRY.get_sample_value("reserves_cache_misses_total", {"cache": name}) or 0.0)
            for name in CACHES}


async def test_cache_hits_and_misses_are_counted_and_exported(backend: dict[str, Any]) -> None:
    client = backend["async_factory"]()
    engine = ReserveEngine(client, backend["settings"])
    await engine.top_up_reserve("USDT", "100", "crypto", "t1")
    exported, start = _exported(), _counts(engine)
    # a reserve on a known account: one hit
    before = _counts(engine)
    await engine.reserve_amount("USDT", "1", "crypto", "r1", "swap")
    assert _delta(before, _counts(engine)) == {"accounts": (1, 0)}
    # its commit: the hold's label is known too
    before = _counts(engine)
    await engine.commit_reserve("r1")
    assert _delta(before, _counts(engine)) == {"accounts": (1, 0), "hold_labels": (1, 0)}
    await engine.reserve_amount("USDT", "1", "crypto", "r2", "swap")
    # another process (fresh caches) releases r2: the label comes from Redis (a miss), the
    # account is opened (a miss), each counted once
    other = ReserveEngine(client, backend["settings"])
    assert set(_counts(other).values()) == {(0, 0)}
    await other.release_reserve("r2")
    by_other = _counts(other)
    assert by_other == {"hold_labels": (0, 1), "accounts": (0, 1)}
    # the scrape adds up both engines' counts since the first measure
    by_engine = _delta(start, _counts(engine))
    assert by_engine == {"accounts": (3, 0), "hold_labels": (1, 0)}
    now = _exported()
    for name in CACHES:
        assert (now[name][0] - exported[name][0], now[name][1] - exported[name][1]) == (
            by_engine[name][0] + by_other[name][0], by_engine[name][1] + by_other[name][1]), name
    assert b'reserves_cache_hits_total{cache="accounts"}' in generate_latest()
    await client.aclose()


def test_counts_of_a_dropped_cache_stay_in_the_total() -> None:
    cache: FifoCache[str, int] = FifoCache(2, "test_dropped")
    cache.hits += 3
    cache.misses += 1
    assert caches.counts()["test_dropped"] == (3, 1)
    del cache
    gc.collect()
    assert caches.counts()["test_dropped"] == (3, 1)  # a counter never goes down
    again: FifoCache[str, int] = FifoCache(2, "test_dropped")
    again.hits += 1
    assert caches.counts()["test_dropped"] == (4, 1)
    unnamed: FifoCache[str, int] = FifoCache(2)
    unnamed.hits += 1
    assert "" not in caches.counts()


# -- flows ----------------------------------------------------------------------------------


def _flows() -> dict[tuple[str, str], float]:
    out = {}
    for flow, outcomes in (("swap", ("completed", "failed")),
                           ("buy", ("completed", "failed", "expired", "settlement_failed")),
                           ("sell", ("completed", "failed", "expired", "settlement_failed"))):
        for outcome in outcomes:
            value = REGISTRY.get_sample_value("reserves_flow_outcomes_total",
                                              {"flow": flow, "outcome": outcome})
            assert value is not None  # exported from the start, at 0
            out[(flow, outcome)] = value
    return out


@pytest.fixture
def rig(backend: dict[str, Any], async_redis: Any) -> Rig:
    return make_rig(backend, async_redis)


async def test_each_ended_flow_counts_once_by_kind_and_outcome(rig: Rig) -> None:
    await rig.seed_reserve("USDT", "1000")
    await rig.seed_reserve("UGX", "100000")
    await rig.deposit("u1", "USDT", "100")
    before = _flows()
    await rig.wallet.swaps.create("u1", "USDT", "UGX", "10", "s1")  # 36,630 UGX: completed
    again = await rig.wallet.swaps.create("u1", "USDT", "UGX", "10", "s1")  # a repeat
    assert again["state"] == "completed"
    with pytest.raises(InsufficientReserve):  # 366,300 UGX > 63,370 left: failed
        await rig.wallet.swaps.create("u1", "USDT", "UGX", "100", "s2")
    with pytest.raises(RecordedFailure):  # its repeat is the same failure, not a new one
        await rig.wallet.swaps.create("u1", "USDT", "UGX", "100", "s2")
    mm = rig.wallet.mobile_money
    buy = await mm.buy("u1", "UGX", "USDT", "37000", "+256700000001", "b1")
    sell = await mm.sell("u1", "USDT", "UGX", "1", "+256700000001", "x1")
    for view, status in ((buy, "success"), (sell, "failed"), (buy, "success")):  # one duplicate
        body, headers = rig.provider.signed_callback(view["provider_tx_id"], status)
        await mm.callback(body, headers)
    after = _flows()
    changed = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert changed == {("swap", "completed"): 1, ("swap", "failed"): 1,
                       ("buy", "completed"): 1, ("sell", "failed"): 1}


async def test_a_flow_ended_then_settled_by_an_operator_counts_once(rig: Rig) -> None:
    await rig.seed_reserve("USDT", "1000")
    await rig.seed_reserve("UGX", "100000")
    before = _flows()
    mm = rig.wallet.mobile_money
    view = await mm.buy("u1", "UGX", "USDT", "37000", "+256700000001", "b1")
    rig.clock.advance_s(flow_limits.mobile_money_hold_ttl_s)
    await rig.wallet.recover()  # no callback in time: expired
    body, headers = rig.provider.signed_callback(view["provider_tx_id"], "success")
    late = await mm.callback(body, headers)  # the provider's success after all: flagged
    assert late["state"] == "settled_after_expiry"
    done = await mm.settle("b1", "credit", {"actor": "ops-1", "ip": "10.0.0.9"})
    assert done["state"] == "completed"
    after = _flows()
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {
        ("buy", "expired"): 1}
