"""Two engine processes on one Redis, each with its own caches (issue 15, item 7).

Process A's reference -> account cache still named the USDT reserve for `pay-77` after the
retention had forgotten that hold and process B had reused the reference on the UGX reserve:
A's partial commit of "1" was converted with USDT's 6 decimals and committed 1,000,000 UGX.
An amount now becomes minor units with the decimals of the account the script acts on,
checked in the same script (commit.lua / hold_batch: 41 currency_mismatch), and the engine
converts again with the account the index names."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from engine.batching import batch_script
from engine.engine import ReserveEngine
from engine.errors import CurrencyMismatch, ResultCode
from engine.service import ReserveService
from tests.engine_helpers import Clock


def _settings(backend: dict[str, Any]) -> Any:
    return replace(backend["settings"], retention_s=60)


def test_a_stale_cached_account_never_converts_a_commit_amount(backend: dict[str, Any]) -> None:
    clock = Clock()
    settings = _settings(backend)
    a = ReserveService(backend["sync"], settings, clock_ms=clock)
    b = ReserveService(backend["sync"], settings, clock_ms=clock)
    a.top_up_reserve("USDT", "100", "crypto", "seed-usdt")
    b.top_up_reserve("UGX", "10000000", "fiat", "seed-ugx")
    a.reserve_amount("USDT", "5", "crypto", "pay-77", "swap")
    a.commit_reserve("pay-77")  # A's cache: pay-77 -> RESERVE_USDT_CRYPTO
    clock.advance_s(61)
    b.top_up_reserve("USDT", "1", "crypto", "prune")  # prunes the ended hold and its index entry
    b.reserve_amount("UGX", "5000000", "fiat", "pay-77", "swap")

    result = a.commit_reserve("pay-77", "1")

    assert result["committed_amount"] == Decimal("1")
    assert result["released_amount"] == Decimal("4999999")
    ugx = b.get_reserve_balance("UGX", "fiat")
    assert (ugx["total_balance"], ugx["locked_balance"]) == (Decimal("9999999"), Decimal("0"))
    usdt = b.get_reserve_balance("USDT", "crypto")
    assert (usdt["total_balance"], usdt["locked_balance"]) == (Decimal("96"), Decimal("0"))


def test_the_script_refuses_an_amount_of_another_currency(backend: dict[str, Any]) -> None:
    """The check itself: a commit converted for USDT on a UGX hold is 41, nothing written."""
    service = ReserveService(backend["sync"], _settings(backend), clock_ms=Clock())
    service.top_up_reserve("UGX", "100", "fiat", "seed")
    service.reserve_amount("UGX", "50", "fiat", "h1", "swap")
    stream = service.ops.keys.stream(service.ops.keys.account("RESERVE_UGX_FIAT").shard)
    events = service.client.xlen(stream)
    with pytest.raises(CurrencyMismatch, match="not in the currency") as raised:
        service.run(service.ops.commit("h1", 1_000_000, None, "USDT"))
    assert raised.value.details["code"] == "currency_mismatch"
    assert service.client.xlen(stream) == events
    assert service.get_hold("h1")["state"] == "pending"
    assert service.run(service.ops.commit("h1", 20, None, "UGX")).hold.committed_minor == 20


async def test_two_batching_engines_convert_with_the_hold_account(backend: dict[str, Any]) -> None:
    """The same through the batching engine (hold_batch carries the currency of each commit)."""
    clock = Clock()
    settings = _settings(backend)
    clients = [backend["async_factory"](), backend["async_factory"]()]
    a, b = (ReserveEngine(c, settings, clock_ms=clock, batching=True) for c in clients)
    try:
        await a.top_up_reserve("USDT", "100", "crypto", "seed-usdt")
        await b.top_up_reserve("UGX", "10000000", "fiat", "seed-ugx")
        await a.reserve_amount("USDT", "5", "crypto", "pay-77", "swap")
        await a.commit_reserve("pay-77")
        clock.advance_s(61)
        await b.top_up_reserve("USDT", "1", "crypto", "prune")
        await b.reserve_amount("UGX", "5000000", "fiat", "pay-77", "swap")
        await b.reserve_amount("UGX", "10", "fiat", "other", "swap")
        # two commits in flight together: one batch call
        stale, other = await asyncio.gather(a.commit_reserve("pay-77", "1"),
                                            a.commit_reserve("other", "2"))
        assert (stale.hold.committed_minor, other.hold.committed_minor) == (1, 2)
        ugx = await b.get_reserve_balance("UGX", "fiat")
        assert (ugx.total_minor, ugx.locked_minor) == (10_000_000 - 3, 0)
    finally:
        for engine in (a, b):
            await engine.close()


def test_hold_batch_refuses_a_commit_of_another_currency(backend: dict[str, Any]) -> None:
    """hold_batch carries each commit's currency: the stale one is 41, its neighbour commits."""
    service = ReserveService(backend["sync"], _settings(backend), clock_ms=Clock())
    service.top_up_reserve("UGX", "100", "fiat", "seed")
    service.reserve_amount("UGX", "50", "fiat", "h1", "swap")
    service.reserve_amount("UGX", "30", "fiat", "h2", "swap")
    ops = service.ops
    commands = [ops.commit("h1", 1_000_000, None, "USDT").send(None),
                ops.commit("h2", 10, None, "UGX").send(None)]
    stale, fine = service.driver.execute(batch_script(commands))
    assert stale[0] == ResultCode.currency_mismatch
    assert (fine[0], fine[6]) == (ResultCode.ok, 10)
    assert service.get_hold("h1")["state"] == "pending"
    ugx = service.get_reserve_balance("UGX", "fiat")
    assert (ugx["total_balance"], ugx["locked_balance"]) == (Decimal("90"), Decimal("50"))
