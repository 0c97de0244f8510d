"""Settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from engine import limits


def env_flag(name: str) -> bool | None:
    """An on/off environment setting: True for 1 / true / yes, False for 0 / false / no (any
    case), None when unset or anything else (the caller's default)."""
    raw = os.environ.get(name, "").lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    return None


def _env_list(name: str) -> tuple[str, ...]:
    raw = os.environ.get(name, "")
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None  # None: embedded fakeredis (with Lua), one process only
    database_url: str = "sqlite:///reserves.db"
    key_prefix: str = "reserves"
    currencies_path: str | None = None
    redis_cluster: bool = False
    # Journal shards: keys of one account share the hash tag of its shard; one stream each.
    shard_count: int = 1
    retention_s: int = limits.retention_s_default
    # WAIT after every script: a reply means the write reached this many replicas.
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000
    # Coalesce concurrent reserve / commit / release calls per shard (engine/batching.py).
    batching: bool = True
    # A shard without its event counter (lua/lib/common.lua check_seq) is Redis that lost its
    # data: False (a bare engine, the tests) starts it afresh as a new deployment; True (every
    # process configured from the environment) refuses with 503 ledger_not_loaded, and only
    # the start-up check (persistence/generation.py, which asks the ledger) or `reserves
    # rebuild` loads it.
    ledger_guard: bool = False
    admin_tokens: tuple[str, ...] = field(default_factory=tuple)
    service_tokens: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls) -> Settings:
        redis_url = os.environ.get("RESERVES_REDIS_URL") or None
        cluster_flag = env_flag("RESERVES_REDIS_CLUSTER")
        if cluster_flag is not None:
            cluster = cluster_flag
        elif redis_url is None:
            cluster = False
        else:
            cluster = detect_cluster(redis_url)
        # Several shards spread the accounts over a cluster's slots. Every process of one
        # deployment must use the same count: it decides where each account's keys live.
        shard_count = int(os.environ.get("RESERVES_SHARDS", "16" if cluster else "1"))
        if not 1 <= shard_count <= 1024:
            raise ValueError(f"RESERVES_SHARDS must be 1..1024, got {shard_count}")
        return cls(
            redis_url=redis_url,
            database_url=os.environ.get("RESERVES_DATABASE_URL") or "sqlite:///reserves.db",
            key_prefix=os.environ.get("RESERVES_KEY_PREFIX") or "reserves",
            currencies_path=os.environ.get("RESERVES_CURRENCIES") or None,
            redis_cluster=cluster,
            shard_count=shard_count,
            retention_s=int(os.environ.get("RESERVES_RETENTION_S", str(limits.retention_s_default))),
            wait_replicas=int(os.environ.get("RESERVES_REDIS_WAIT_REPLICAS", "0")),
            wait_timeout_ms=int(os.environ.get("RESERVES_REDIS_WAIT_TIMEOUT_MS", "1000")),
            batching=env_flag("RESERVES_BATCHING") is not False,
            ledger_guard=True,
            admin_tokens=_env_list("RESERVES_ADMIN_TOKENS"),
            service_tokens=_env_list("RESERVES_SERVICE_TOKENS"),
        )


def detect_cluster(redis_url: str) -> bool:
    """Whether the node at redis_url runs in cluster mode (INFO cluster: cluster_enabled:1)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except redis.RedisError:
        return False  # unreachable now: the engine reports that on first use
    finally:
        client.close()
