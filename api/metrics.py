"""Prometheus metrics of the HTTP layer and the engine (default registry, which also holds
engine.monitoring's). Gauges are floats for display; no arithmetic is done on them."""

from __future__ import annotations

import time
from collections import deque

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


class Window:
    """Requests of the last window_s seconds, for the monitor's error-rate and p99 alerts."""

    def __init__(self, window_s: float = 60.0, samples_max: int = 100_000) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float, bool]] = deque(maxlen=samples_max)

    def add(self, seconds: float, failed: bool) -> None:
        self._samples.append((time.monotonic(), seconds, failed))

    def snapshot(self) -> tuple[int, int, int | None]:
        """(requests, server errors, p99 latency in ms) over the window."""
        horizon = time.monotonic() - self.window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        if not self._samples:
            return 0, 0, None
        durations = sorted(s for _, s, _ in self._samples)
        p99 = durations[min(len(durations) - 1, (len(durations) * 99) // 100)]
        return len(durations), sum(1 for *_, f in self._samples if f), int(p99 * 1000)


window = Window()
