"""Forecasts: each reserve's net outflow rate over recent windows, the estimated time until it
reaches the warning utilization and until its available balance is empty, and the top-up that
returns it to a target utilization.

Balances are sampled into a bounded sorted set per account (one sample per sample_interval_ms
bucket, so several API processes sampling at once keep one point per bucket):

    {prefix}:{s<N>}:u:<label>    score: bucket start (ms); member "<bucket_ms>:<total>:<locked>"

The rate of a window is robust: no rate until the window's points span forecast_span_ms_min and
number forecast_samples_min, then the median of the rates of forecast_pieces_count equal pieces
of the observed span (the available balance taken linearly between samples). A lone top-up or
release falls in one or two pieces and leaves the median alone; a steady drain gives every
piece, and so the median, its rate. (The rate between the window's first and last points turned
one top-up of 10,000 into "-3.6 million an hour" ten seconds later.)

The arithmetic is exact (integer minor units and milliseconds, Fractions between samples); rates
are shown as Decimal. The projection assumes the outflow is held (locked) money at a constant
rate with the total unchanged; it is an estimate, shown as such.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from statistics import median_low
from typing import Any

from engine.keys import KeySpace
from engine.monitoring import limits, metrics
from engine.money import from_minor, utilization_percent
from engine.ops import wall_clock_ms
from engine.types import Balance


@dataclass(frozen=True, slots=True)
class Sample:
    ts_ms: int
    total_minor: int
    locked_minor: int

    @property
    def available_minor(self) -> int:
        return self.total_minor - self.locked_minor


@dataclass(frozen=True, slots=True)
class Rate:
    """Available balance lost (outflow_minor_per_ms > 0) or gained (< 0), measured over span_ms
    of points in a window."""

    window_ms: int
    outflow_minor_per_ms: Fraction
    span_ms: int
    samples_count: int


def _available_at(points: Sequence[Sample], times_ms: Sequence[int]) -> list[Fraction]:
    """The available balance at each time (ascending, inside the points' span), linearly
    between the points around it. Points are in strictly increasing time order."""
    out: list[Fraction] = []
    i = 0
    for t in times_ms:
        while points[i + 1].ts_ms < t:
            i += 1
        p, q = points[i], points[i + 1]
        out.append(p.available_minor + Fraction(
            (q.available_minor - p.available_minor) * (t - p.ts_ms), q.ts_ms - p.ts_ms))
    return out


def window_rate(points: Sequence[Sample], now_ms: int, window_ms: int,
                span_ms_min: int = limits.forecast_span_ms_min,
                samples_min: int = limits.forecast_samples_min,
                pieces_count: int = limits.forecast_pieces_count) -> Rate | None:
    """The median of the pieces' rates, None when the points inside the window are fewer than
    samples_min or span less than span_ms_min. Points are in strictly increasing time order."""
    assert pieces_count >= 1
    inside = [p for p in points if p.ts_ms >= now_ms - window_ms]
    if len(inside) < max(2, samples_min):
        return None
    start_ms, span_ms = inside[0].ts_ms, inside[-1].ts_ms - inside[0].ts_ms
    if span_ms < max(span_ms_min, pieces_count):  # every piece at least 1 ms
        return None
    bounds_ms = [start_ms + span_ms * j // pieces_count for j in range(pieces_count + 1)]
    values = _available_at(inside, bounds_ms)
    rates = [(values[j] - values[j + 1]) / (bounds_ms[j + 1] - bounds_ms[j])
             for j in range(pieces_count)]
    return Rate(window_ms, median_low(rates), span_ms, len(inside))


def per_hour(rate: Rate, decimals: int) -> Decimal:
    """The rate in major units per hour, to the currency's decimals."""
    minor_per_hour = rate.outflow_minor_per_ms * 3_600_000
    quotient = Decimal(minor_per_hour.numerator) / Decimal(minor_per_hour.denominator)
    return quotient.scaleb(-decimals).quantize(Decimal(1).scaleb(-decimals),
                                               rounding=ROUND_HALF_EVEN)


def seconds_to_empty(available_minor: int, rate: Rate | None) -> int | None:
    if rate is None or rate.outflow_minor_per_ms <= 0:
        return None
    return int(max(0, available_minor) // (rate.outflow_minor_per_ms * 1000))


def seconds_to_warning(total_minor: int, locked_minor: int, rate: Rate | None,
                       warning_pct: int = limits.warning_pct) -> int | None:
    """Until locked reaches warning_pct of the total, the outflow being locked money. An empty
    reserve has no utilization (and raises no utilization alert): no estimate."""
    if total_minor <= 0:
        return None
    if locked_minor * 100 >= warning_pct * total_minor:
        return 0
    if rate is None or rate.outflow_minor_per_ms <= 0:
        return None
    gap_scaled = warning_pct * total_minor - 100 * locked_minor  # (locked gap) * 100
    return int(gap_scaled // (100 * rate.outflow_minor_per_ms * 1000))


def suggested_top_up_minor(total_minor: int, locked_minor: int,
                           target_pct: int = limits.target_utilization_pct) -> int:
    """The least top-up X (minor units, rounded up) with locked / (total + X) <= target."""
    assert 0 < target_pct <= 100
    needed_total = -(-(locked_minor * 100) // target_pct)  # ceil
    return max(0, needed_total - total_minor)


def forecast(balance: Balance, samples: Sequence[Sample], now_ms: int,
             windows_ms: Sequence[int] = limits.forecast_windows_ms,
             target_pct: int = limits.target_utilization_pct,
             span_ms_min: int = limits.forecast_span_ms_min,
             samples_min: int = limits.forecast_samples_min) -> dict[str, Any]:
    """The `forecast` object of a reserve. The current balance counts as the newest point; the
    rate is the shortest window's that has one (0, with window_s None, when none has)."""
    decimals = balance.account.currency.decimals
    by_ts = {s.ts_ms: s for s in sorted(samples, key=lambda s: s.ts_ms) if s.ts_ms < now_ms}
    points = [*by_ts.values(), Sample(now_ms, balance.total_minor, balance.locked_minor)]
    windows = []
    chosen: Rate | None = None
    for window_ms in sorted(windows_ms):
        rate = window_rate(points, now_ms, window_ms, span_ms_min, samples_min)
        windows.append({
            "window_s": window_ms // 1000,
            "net_outflow_per_hour": per_hour(rate, decimals) if rate else None,
            "samples_count": sum(1 for p in points if p.ts_ms >= now_ms - window_ms),
        })
        chosen = chosen or rate
    top_up_minor = suggested_top_up_minor(balance.total_minor, balance.locked_minor, target_pct)
    return {
        "net_outflow_per_hour": per_hour(chosen, decimals) if chosen else Decimal(0),
        "window_s": chosen.window_ms // 1000 if chosen else None,
        "windows": windows,
        "seconds_to_warning": seconds_to_warning(balance.total_minor, balance.locked_minor, chosen),
        "seconds_to_empty": seconds_to_empty(balance.available_minor, chosen),
        "target_utilization_percentage": Decimal(target_pct),
        "suggested_top_up": from_minor(top_up_minor, decimals),
    }


def publish(balance: Balance, result: dict[str, Any]) -> None:
    label = balance.account.label
    metrics.forecast_outflow.labels(label).set(float(result["net_outflow_per_hour"]))
    metrics.forecast_to_warning.labels(label).set(
        metrics.seconds_or_minus_one(result["seconds_to_warning"]))
    metrics.forecast_to_empty.labels(label).set(
        metrics.seconds_or_minus_one(result["seconds_to_empty"]))
    metrics.forecast_top_up.labels(label).set(float(result["suggested_top_up"]))


class SampleBook:
    """The bounded per-account sample sets in Redis."""

    def __init__(self, client: Any, keys: KeySpace,
                 clock_ms: Callable[[], int] = wall_clock_ms,
                 interval_ms: int = limits.sample_interval_ms,
                 count_max: int = limits.samples_count_max) -> None:
        self.client = client
        self.keys = keys
        self.clock_ms = clock_ms
        self.interval_ms = interval_ms
        self.count_max = count_max

    def key(self, label: str) -> str:
        return f"{self.keys.tag(self.keys.shard_of(label))}:u:{label}"

    async def record(self, balance: Balance, now_ms: int | None = None) -> None:
        now_ms = self.clock_ms() if now_ms is None else now_ms
        bucket = now_ms - now_ms % self.interval_ms
        key = self.key(balance.account.label)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, bucket, bucket)
            pipe.zadd(key, {f"{bucket}:{balance.total_minor}:{balance.locked_minor}": bucket})
            pipe.zremrangebyrank(key, 0, -(self.count_max + 1))
            await pipe.execute()

    async def samples(self, label: str, since_ms: int = 0) -> list[Sample]:
        members = await self.client.zrangebyscore(self.key(label), since_ms, "+inf")
        out = []
        for member in members:
            ts, total, locked = member.split(":")
            out.append(Sample(int(ts), int(total), int(locked)))
        return out

    async def forecast(self, balance: Balance, now_ms: int | None = None) -> dict[str, Any]:
        now_ms = self.clock_ms() if now_ms is None else now_ms
        since_ms = now_ms - max(limits.forecast_windows_ms)
        result = forecast(balance, await self.samples(balance.account.label, since_ms), now_ms)
        publish(balance, result)
        return result

    async def history(self, label: str,
                      points_max: int = limits.history_points_max) -> list[list[Any]]:
        """[ts_ms, utilization percent] of the newest samples, oldest first (for the chart)."""
        members = await self.client.zrange(self.key(label), -points_max, -1)
        out: list[list[Any]] = []
        for member in members:
            ts, total, locked = (int(x) for x in member.split(":"))
            out.append([ts, utilization_percent(locked, total)])
        return out
