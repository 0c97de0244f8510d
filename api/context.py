"""What the request handlers share: the engine, the token book, the rate limiter, the
status cache, and the settings of the HTTP layer (ApiConfig, from the environment)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from api import limits
from api.auth import TokenBook
from api.ratelimit import RateLimiter
from engine.config import Settings, env_flag
from engine.engine import ReserveEngine


@dataclass(frozen=True)
class ApiConfig:
    rate_per_s: float = limits.rate_per_s_default
    # Run the persister (and sweeper) inside this process: always with the embedded fakeredis,
    # which no other process can reach; optional with a real Redis (`reserves persist` instead).
    persist_in_process: bool = False
    background_tasks: bool = True  # sweeper, saga recovery, monitor
    body_bytes_max: int = limits.body_bytes_max
    # Freeze what start-up built out of the garbage collector's walks (`reserves serve` turns it
    # on: a process-wide setting, not for an app built inside another program or a test).
    gc_freeze: bool = False

    @classmethod
    def from_env(cls, settings: Settings) -> ApiConfig:
        persist = settings.redis_url is None or env_flag("RESERVES_PERSIST_IN_PROCESS") is True
        return cls(rate_per_s=float(os.environ.get("RESERVES_RATE_LIMIT_PER_S",
                                                   str(limits.rate_per_s_default))),
                   persist_in_process=persist,
                   gc_freeze=env_flag("RESERVES_GC_FREEZE") is True)


class StatusCache:
    """GET /wallet/reserves/status for limits.status_cache_ttl_s, dropped on any change: an
    entry is valid only while the journal counters (one per shard, bumped by every event of
    any process) are the ones it was built with."""

    def __init__(self, engine: ReserveEngine, ttl_s: float = limits.status_cache_ttl_s) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self._keys = [engine.ops.keys.seq(s) for s in range(engine.settings.shard_count)]
        self._entry: tuple[float, list[Any], dict[str, Any]] | None = None
        self.hits = 0

    async def _stamp(self) -> list[Any]:
        if len(self._keys) == 1:
            return [await self.engine.client.get(self._keys[0])]
        return [await self.engine.client.get(k) for k in self._keys]

    async def get(self, build: Any) -> dict[str, Any]:
        stamp = await self._stamp()
        entry = self._entry
        if entry is not None and entry[0] > time.monotonic() and entry[1] == stamp:
            self.hits += 1
            return entry[2]
        value = await build()
        self._entry = (time.monotonic() + self.ttl_s, stamp, value)
        return value

    def clear(self) -> None:
        self._entry = None


@dataclass
class ApiContext:
    settings: Settings
    config: ApiConfig
    engine: ReserveEngine
    tokens: TokenBook
    limiter: RateLimiter
    status_cache: StatusCache
    monitor: Any = None  # engine.monitoring.monitor.Monitor, when running
    persister: Any = None  # persistence.worker.Persister of this process, when running
    extras: dict[str, Any] = field(default_factory=dict)  # state of optional route modules

    def clear_caches(self) -> None:
        self.engine.clear_caches()
        self.status_cache.clear()
