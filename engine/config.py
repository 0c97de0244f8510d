"""Settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from engine import limits


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
    admin_tokens: tuple[str, ...] = field(default_factory=tuple)
    service_tokens: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls) -> Settings:
        shard_count = int(os.environ.get("RESERVES_SHARDS", "1"))
        if not 1 <= shard_count <= 1024:
            raise ValueError(f"RESERVES_SHARDS must be 1..1024, got {shard_count}")
        return cls(
            redis_url=os.environ.get("RESERVES_REDIS_URL") or None,
            database_url=os.environ.get("RESERVES_DATABASE_URL") or "sqlite:///reserves.db",
            key_prefix=os.environ.get("RESERVES_KEY_PREFIX") or "reserves",
            currencies_path=os.environ.get("RESERVES_CURRENCIES") or None,
            redis_cluster=os.environ.get("RESERVES_REDIS_CLUSTER", "") in ("1", "true", "yes"),
            shard_count=shard_count,
            retention_s=int(os.environ.get("RESERVES_RETENTION_S", str(limits.retention_s_default))),
            admin_tokens=_env_list("RESERVES_ADMIN_TOKENS"),
            service_tokens=_env_list("RESERVES_SERVICE_TOKENS"),
        )
