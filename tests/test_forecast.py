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
    # Five quiet minutes: the 5-minute window sees no outflow; the hour's 9 pieces of 100 s are
    # 6 draining at 600 an hour and 3 quiet: its median still sees the outflow.
    for _ in range(5):
        clock.advance_s(60)
        await book.record(await engine.get_reserve_balance("USDT"))
    result = await book.forecast(await engine.get_reserve_balance("USDT"))
    assert [w["net_outflow_per_hour"] for w in result["windows"]] == [
        Decimal("0.000000"), Decimal("600.000000")]
    assert result["net_outflow_per_hour"] == Decimal("0.000000")
    assert result["seconds_to_empty"] is None
    assert result["seconds_to_warning"] is None
    # A release brings 10 back in the last minute: a lone inflow, not a trend. It moves two of
    # the 5-minute window's pieces (the median stays 0) and one of the hour's 9 pieces of
    # 106.67 s (5 at 600 an hour, one at 375, two at 0, one at -337.5: the median is 600).
    clock.advance_s(60)
    await engine.release_reserve("m10")
    result = await book.forecast(await engine.get_reserve_balance("USDT"))
    assert [w["net_outflow_per_hour"] for w in result["windows"]] == [
        Decimal("0.000000"), Decimal("600.000000")]
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
    now = START_MS + 180_000
    samples = [Sample(START_MS, 3_000_000, 0), Sample(START_MS + 90_000, 3_000_000, 1_000_000)]
    result = forecast(Balance(account, 3_000_000, 1_500_000), samples, now, windows_ms=(180_000,),
                      samples_min=3)
    # 9 pieces of 20 s: 4 lose 1 USDT in 90 s, 4 lose 0.5 in 90 s, the middle one half of each
    # (0.75 in 90 s): 30 per hour; 1.5 left: 3 minutes; to 75 % (2.25 locked): 90 s
    assert result["net_outflow_per_hour"] == Decimal("30.000000")
    assert result["seconds_to_empty"] == 180
    assert result["seconds_to_warning"] == 90
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


async def _sampled_every_2_s(engine: ReserveEngine, book: SampleBook, clock: Clock,
                             steps: int, step: Any = None) -> None:
    """The monitor's sampling: every 2 s (its bucket), after step(i) if given."""
    for i in range(1, steps + 1):
        clock.advance_s(2)
        if step is not None:
            await step(i)
        await book.record(await engine.get_reserve_balance("USDT"))


async def test_one_top_up_then_ten_seconds_is_no_rate(backend: dict[str, Any]) -> None:
    # The reported case: 10,000 in, 10 s later the forecast said -3,600,000 USDT an hour.
    clock = Clock()
    client = backend["async_factory"]()
    engine = ReserveEngine(client, backend["settings"], clock_ms=clock)
    book = SampleBook(client, engine.ops.keys, clock)
    await book.record(await engine.get_reserve_balance("USDT"))  # empty
    await engine.top_up_reserve("USDT", "10000", "crypto", "t1")
    await _sampled_every_2_s(engine, book, clock, 5)
    result = await book.forecast(await engine.get_reserve_balance("USDT"))
    # 6 points over 10 s: less than the minimum window (60 s), no rate
    assert result["windows"] == [
        {"window_s": 300, "net_outflow_per_hour": None, "samples_count": 6},
        {"window_s": 3600, "net_outflow_per_hour": None, "samples_count": 6}]
    assert (result["net_outflow_per_hour"], result["window_s"]) == (Decimal(0), None)
    assert (result["seconds_to_empty"], result["seconds_to_warning"]) == (None, None)
    # A quiet minute later the window is long enough; the top-up sits in the first of the 9
    # pieces (the 10,000 over 70 s was -514,285.714286 an hour), the 8 others are 0.
    await _sampled_every_2_s(engine, book, clock, 30)
    result = await book.forecast(await engine.get_reserve_balance("USDT"))
    assert result["windows"][0] == {"window_s": 300, "net_outflow_per_hour": Decimal("0.000000"),
                                    "samples_count": 36}
    assert (result["net_outflow_per_hour"], result["window_s"]) == (Decimal("0.000000"), 300)
    assert result["seconds_to_empty"] is None
    await client.aclose()


async def test_a_steady_drain_is_its_rate_whatever_a_top_up_does(
        backend: dict[str, Any]) -> None:
    # 10,000 USDT; every 2 s a hold of 1 USDT (0.5 USDT/s: 1,800 an hour) for 5 minutes, and
    # a top-up of 5,000 half-way. The first-to-last rate would be (10,000 - 14,850) over 300 s:
    # -58,200 an hour.
    clock = Clock()
    client = backend["async_factory"]()
    engine = ReserveEngine(client, backend["settings"], clock_ms=clock)
    book = SampleBook(client, engine.ops.keys, clock)
    await engine.top_up_reserve("USDT", "10000", "crypto", "t1")
    await book.record(await engine.get_reserve_balance("USDT"))

    async def drain(i: int) -> None:
        await engine.reserve_amount("USDT", "1", "crypto", f"d{i}", "swap")
        if i == 75:
            await engine.top_up_reserve("USDT", "5000", "crypto", "t2")

    await _sampled_every_2_s(engine, book, clock, 150, drain)
    balance = await engine.get_reserve_balance("USDT")
    assert (balance.total_minor, balance.locked_minor) == (15_000_000_000, 150_000_000)
    result = await book.forecast(balance)
    # 9 pieces of 33.33 s: 8 lose exactly 0.5 USDT/s, the top-up's piece gains
    assert [w["net_outflow_per_hour"] for w in result["windows"]] == [
        Decimal("1800.000000"), Decimal("1800.000000")]
    assert result["net_outflow_per_hour"] == Decimal("1800.000000")
    # 14,850 available at 0.5 a second: 29,700 s; locked to 75 % of 15,000 (11,250): 11,100
    # more at 0.5 a second: 22,200 s
    assert result["seconds_to_empty"] == 29_700
    assert result["seconds_to_warning"] == 22_200
    await client.aclose()


async def test_a_stepped_drain_is_close_to_its_rate(backend: dict[str, Any]) -> None:
    # Holds of 3 USDT every 6 s (0.5 USDT/s, 1,800 an hour) sampled every 2 s: a staircase.
    clock = Clock()
    client = backend["async_factory"]()
    engine = ReserveEngine(client, backend["settings"], clock_ms=clock)
    book = SampleBook(client, engine.ops.keys, clock)
    await engine.top_up_reserve("USDT", "10000", "crypto", "t1")
    await book.record(await engine.get_reserve_balance("USDT"))

    async def drain(i: int) -> None:
        if i % 3 == 0:
            await engine.reserve_amount("USDT", "3", "crypto", f"d{i}", "swap")

    await _sampled_every_2_s(engine, book, clock, 150, drain)
    result = await book.forecast(await engine.get_reserve_balance("USDT"))
    rate = result["net_outflow_per_hour"]
    # A piece of 33.33 s holds 5 or 6 of the 2 s ramps of 3 USDT, partly at its ends: its rate
    # is within 3 USDT per piece (324 an hour) of 1,800; the median is closer.
    assert abs(rate - Decimal(1800)) <= Decimal(324), rate
    await client.aclose()
