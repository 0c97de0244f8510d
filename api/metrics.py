"""Prometheus metrics of the HTTP layer and the engine (default registry, which also holds
engine.monitoring's). Gauges are floats for display; no arithmetic is done on them."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

requests = Counter("reserves_http_requests_total", "HTTP requests by route and status",
                   ["route", "status"])
latency = Histogram("reserves_http_request_seconds", "HTTP request latency by route", ["route"],
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                             2.5, 5))
balance = Gauge("reserves_balance", "Reserve balance in major units", ["account", "balance"])
utilization = Gauge("reserves_utilization_percent", "Reserve utilization (locked / total)",
                    ["account"])
journal_length = Gauge("reserves_journal_length", "Journal events in the Redis streams")
journal_pending = Gauge("reserves_journal_pending", "Journal events read, not yet persisted")
journal_unread = Gauge("reserves_journal_unread", "Journal events not yet read by the persister")
journal_oldest_s = Gauge("reserves_journal_oldest_unpersisted_seconds",
                         "Age of the oldest event not yet in Postgres")


# The monitor's latency histogram: bucket upper bounds growing by LATENCY_BUCKET_RATIO from
# LATENCY_BUCKET_MIN_S to LATENCY_BUCKET_MAX_S (and one bucket above, for anything slower).
LATENCY_BUCKET_MIN_S = 0.0001
LATENCY_BUCKET_MAX_S = 60.0
LATENCY_BUCKET_RATIO = 1.05


def _latency_bounds_s() -> list[float]:
    bounds = [LATENCY_BUCKET_MIN_S]
    while bounds[-1] < LATENCY_BUCKET_MAX_S:
        bounds.append(bounds[-1] * LATENCY_BUCKET_RATIO)
    return bounds


# The routes that move money (endpoint names). A 409 answer of one of these is a refusal
# (insufficient reserve or funds, a reference reused differently, a hold already ended): the
# refusal-rate alert counts those over these routes' requests. A 409 is never a 5xx error.
MONEY_ROUTES = frozenset({"top_up", "withdraw", "reserve", "release_hold", "commit_hold",
                          "create_swap", "buy", "sell", "deposit"})


class Window:
    """Requests of the last window_s seconds, for the monitor's error-rate, refusal-rate and
    p99 alerts.

    One latency histogram per second of the window, and their running sum: a request costs two
    increments and a snapshot reads one histogram, whatever the request rate. (Keeping every
    sample and sorting them for each snapshot stalled the event loop for tens of milliseconds
    once a second under load.) p99 is the upper bound of its bucket: at most 5 % above it."""

    def __init__(self, window_s: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        assert window_s >= 1
        self.window_s = window_s
        self._clock = clock
        self._bounds_s = _latency_bounds_s()
        buckets = len(self._bounds_s) + 1  # the last: slower than LATENCY_BUCKET_MAX_S
        self._slot_counts = [[0] * buckets for _ in range(window_s)]  # by second % window_s
        self._slot_failures = [0] * window_s
        self._slot_money = [0] * window_s
        self._slot_refusals = [0] * window_s
        self._counts = [0] * buckets  # sum of the slots
        self._failures = 0
        self._money = 0
        self._refusals = 0
        self._requests = 0
        self._second = int(clock())  # the newest second the slots hold

    def _advance(self) -> int:
        """Forget the seconds that fell out of the window; returns the current slot."""
        second = int(self._clock())
        if second > self._second:
            for s in range(self._second + 1, min(second, self._second + self.window_s) + 1):
                slot = s % self.window_s
                counts = self._slot_counts[slot]
                if any(counts):
                    for i, c in enumerate(counts):
                        if c:
                            self._counts[i] -= c
                            self._requests -= c
                            counts[i] = 0
                    self._failures -= self._slot_failures[slot]
                    self._slot_failures[slot] = 0
                    self._money -= self._slot_money[slot]
                    self._slot_money[slot] = 0
                    self._refusals -= self._slot_refusals[slot]
                    self._slot_refusals[slot] = 0
            self._second = second
        return self._second % self.window_s

    def add_response(self, seconds: float, status: int, route: str) -> None:
        """One answered request: a 5xx is a failure; a 409 of a money route, a refusal."""
        money = route in MONEY_ROUTES
        self.add(seconds, status >= 500, money, money and status == 409)

    def add(self, seconds: float, failed: bool, money: bool = False,
            refused: bool = False) -> None:
        slot = self._advance()
        bucket = bisect_left(self._bounds_s, seconds)
        self._slot_counts[slot][bucket] += 1
        self._counts[bucket] += 1
        self._requests += 1
        if failed:
            self._slot_failures[slot] += 1
            self._failures += 1
        if money:
            self._slot_money[slot] += 1
            self._money += 1
            if refused:
                self._slot_refusals[slot] += 1
                self._refusals += 1

    def refusals(self) -> tuple[int, int]:
        """(money-route requests, their refusals) over the window."""
        self._advance()
        return self._money, self._refusals

    def snapshot(self) -> tuple[int, int, int | None]:
        """(requests, server errors, p99 latency in ms) over the window."""
        self._advance()
        if not self._requests:
            return 0, 0, None
        # nearest rank: the ceil(0.99 n)-th fastest, so one slow request of 100 is not the p99
        rank = (self._requests * 99 + 99) // 100 - 1
        seen = 0
        for bucket, count in enumerate(self._counts):
            seen += count
            if seen > rank:
                break
        bound_s = self._bounds_s[min(bucket, len(self._bounds_s) - 1)]
        return self._requests, self._failures, int(bound_s * 1000)


window = Window()
