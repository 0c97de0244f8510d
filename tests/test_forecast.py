"""Forecasts on a scripted outflow with a hand-moved clock: exact rates, times and top-ups."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.engine import ReserveEngine
from engine.monitoring.forecast import (
    Sample,
    SampleBook,
    forecast,
    suggested_top_up_minor,
)
from tests.engine_helpers import START_MS, Clock


async def _scripted(backend: dict[str, Any]) -> tuple[ReserveEngine, SampleBook, Clock, Any]:
    """USDT reserve of 1000; every minute for 10 minutes one more hold of 10 USDT, sampled."""
    clock = Clock()
    client = backend["async_factory"]()
    engine = ReserveEngine(client, backend["settings"], clock_ms=clock)
    book = SampleBook(client, engine.ops.keys, clock)
    await engine.top_up_reserve("USDT", "1000", "crypto", "seed")
    await book.record(await engine.get_reserve_balance("USDT"))
    for minute in range(1, 11):
        clock.advance_s(60)
        await engine.reserve_amount("USDT", "10", "crypto", f"m{minute}", "swap")
        await book.record(await engine.get_reserve_balance("USDT"))
    return engine, book, clock, client


async def test_forecast_of_a_steady_outflow(backend: dict[str, Any]) -> None:
    engine, book, clock, client = await _scripted(backend)
    balance = await engine.get_reserve_balance("USDT")
    assert (balance.total_minor, balance.locked_minor) == (1_000_000_000, 100_000_000)
    result = await book.forecast(balance)
    # 10 USDT a minute is 600 USDT an hour, over either window
    assert result["net_outflow_per_hour"] == Decimal("600.000000")
    assert result["window_s"] == 300
    assert result["windows"] == [
        {"window_s": 300, "net_outflow_per_hour": Decimal("600.000000"), "samples_count": 6},
        {"window_s": 3600, "net_outflow_per_hour": Decimal("600.000000"), "samples_count": 11},
    ]
    # 650 USDT more to lock until 75 %: 65 minutes; 900 available: 90 minutes
    assert result["seconds_to_warning"] == 3900
    assert result["seconds_to_empty"] == 5400
    assert result["suggested_top_up"] == Decimal(0)  # 10 % is below the 50 % target
    assert result["target_utilization_percentage"] == Decimal(50)
    await client.aclose()


async def test_forecast_after_the_outflow_stops_and_reverses(backend: dict[str, Any]) -> None:
    engine, book, clock, client = await _scripted(backend)
    # Five quiet minutes: the 5-minute window sees no outflow, the hour still does.
    clock.advance_s(300)
    balance = await engine.get_reserve_balance("USDT")
    await book.record(balance)
    result = await book.forecast(balance)
    assert result["windows"][0]["net_outflow_per_hour"] == Decimal("0.000000")
    assert result["seconds_to_empty"] is None
    assert result["seconds_to_warning"] is None
    # A release brings money back: a negative outflow, no time to empty.
    clock.advance_s(60)
    await engine.release_reserve("m10")
    result = await book.forecast(await engine.get_reserve_balance("USDT"))
    assert result["windows"][0]["net_outflow_per_hour"] == Decimal("-600.000000")  # 10 back in the last minute
    assert result["seconds_to_empty"] is None
    await client.aclose()


async def test_an_empty_reserve_is_not_at_warning(backend: dict[str, Any]) -> None:
    client = backend["async_factory"]()
    engine = ReserveEngine(client, backend["settings"], clock_ms=Clock())
    book = SampleBook(client, engine.ops.keys, engine.ops.clock_ms)
    result = await book.forecast(await engine.get_reserve_balance("BTC"))
    assert result["seconds_to_warning"] is None  # 0 of 0 is no utilization, not 100 %
    assert result["seconds_to_empty"] is None
    assert result["suggested_top_up"] == Decimal(0)
    await client.aclose()


async def test_forecast_past_warning_and_suggested_top_up(backend: dict[str, Any]) -> None:
    clock = Clock()
    client = backend["async_factory"]()
    engine = ReserveEngine(client, backend["settings"], clock_ms=clock)
    book = SampleBook(client, engine.ops.keys, clock)
    await engine.top_up_reserve("UGX", "400", "fiat", "seed")
    await engine.reserve_amount("UGX", "333", "fiat", "r", "sell")
    result = await book.forecast(await engine.get_reserve_balance("UGX"))
    assert result["seconds_to_warning"] == 0  # 83.25 % is past 75 %
    assert result["seconds_to_empty"] is None  # one point: no rate yet
    assert result["net_outflow_per_hour"] == Decimal(0)
    # 333 / 666 is 50 %: top up 266 UGX
    assert result["suggested_top_up"] == Decimal(266)
    await client.aclose()


def test_suggested_top_up_rounds_up_to_the_minor_unit() -> None:
    assert suggested_top_up_minor(1000, 800, 50) == 600
    assert suggested_top_up_minor(1, 1, 75) == 1  # 100/75 = 1.33.. -> total 2
    assert suggested_top_up_minor(100, 100, 60) == 67  # 166.66.. -> 167
    assert suggested_top_up_minor(0, 0, 50) == 0


@given(total=st.integers(0, 10**15), locked_share=st.integers(0, 1000),
       target=st.integers(1, 100))
def test_suggested_top_up_is_the_least_that_reaches_the_target(
        total: int, locked_share: int, target: int) -> None:
    locked = total * locked_share // 1000
    x = suggested_top_up_minor(total, locked, target)
    assert x >= 0
    assert locked * 100 <= target * (total + x)
    if x > 0:
        assert locked * 100 > target * (total + x - 1)


def test_forecast_is_pure_on_given_samples() -> None:
    from engine.registry import CurrencyRegistry
    from engine.types import Account, AccountKind, Balance

    usdt = CurrencyRegistry.load().get("USDT")
    account = Account("RESERVE_USDT_CRYPTO", usdt, AccountKind.reserve, 1, "RUSDTc0001", 0)
    now = START_MS + 120_000
    samples = [Sample(START_MS, 3_000_000, 0), Sample(START_MS + 60_000, 3_000_000, 1_000_000)]
    result = forecast(Balance(account, 3_000_000, 1_500_000), samples, now, windows_ms=(120_000,))
    # 1.5 USDT in 2 minutes: 45 per hour; 1.5 left: 2 minutes; to 75 % (2.25 locked): 1 minute
    assert result["net_outflow_per_hour"] == Decimal("45.000000")
    assert result["seconds_to_empty"] == 120
    assert result["seconds_to_warning"] == 60
    assert result["suggested_top_up"] == Decimal("0.000000")


async def test_samples_are_bucketed_and_bounded(backend: dict[str, Any]) -> None:
    clock = Clock()
    client = backend["async_factory"]()
    engine = ReserveEngine(client, backend["settings"], clock_ms=clock)
    book = SampleBook(client, engine.ops.keys, clock, interval_ms=1000, count_max=5)
    await engine.top_up_reserve("USDT", "10", "crypto", "seed")
    balance = await engine.get_reserve_balance("USDT")
    await book.record(balance)
    await engine.reserve_amount("USDT", "1", "crypto", "a", "swap")
    clock.now_ms += 999  # same bucket: the newer sample replaces the older
    await book.record(await engine.get_reserve_balance("USDT"))
    assert await book.samples("RESERVE_USDT_CRYPTO") == [Sample(START_MS, 10_000_000, 1_000_000)]
    for _ in range(8):
        clock.advance_s(1)
        await book.record(await engine.get_reserve_balance("USDT"))
    samples = await book.samples("RESERVE_USDT_CRYPTO")
    assert len(samples) == 5
    assert samples[-1].ts_ms == clock.now_ms - clock.now_ms % 1000
    history = await book.history("RESERVE_USDT_CRYPTO", points_max=2)
    assert history == [[samples[-2].ts_ms, Decimal("10.00")], [samples[-1].ts_ms, Decimal("10.00")]]
    await client.aclose()


@pytest.mark.parametrize("interval_ms", [1000, 2000])
def test_bucket_start(interval_ms: int) -> None:
    assert START_MS % interval_ms == 0  # the scripted clocks start on a bucket boundary
