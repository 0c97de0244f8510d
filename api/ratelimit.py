"""Per-token rate limit: a token bucket per token digest, in this process.

Each API process limits on its own; with N processes behind a balancer a token may reach up
to N times the rate. That keeps the hot path free of an extra Redis round trip."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_s: float


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: float, buckets_max: int = 10_000) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.buckets_max = buckets_max
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    def acquire(self, key: str, now_s: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds to wait (for Retry-After)."""
        if not self.enabled:
            return 0.0
        now_s = time.monotonic() if now_s is None else now_s
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.buckets_max:
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(self.burst, now_s)
        bucket.tokens = min(self.burst, bucket.tokens + (now_s - bucket.updated_s) * self.rate_per_s)
        bucket.updated_s = now_s
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate_per_s

    @staticmethod
    def retry_after(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))
