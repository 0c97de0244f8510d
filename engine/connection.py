"""Redis clients from the settings: a real Redis (or Cluster) by URL, or embedded fakeredis."""

from __future__ import annotations

from typing import Any

from engine import limits
from engine.config import Settings

_embedded_server: Any = None


def embedded_server() -> Any:
    """One in-process fakeredis server, shared by this process's sync and asyncio clients."""
    global _embedded_server
    if _embedded_server is None:
        import fakeredis

        _embedded_server = fakeredis.FakeServer()
    return _embedded_server


def _is_cluster(settings: Settings) -> bool:
    return settings.redis_cluster


def sync_client(settings: Settings) -> Any:
    if settings.redis_url is None:
        import fakeredis

        return fakeredis.FakeRedis(server=embedded_server(), decode_responses=True)
    if _is_cluster(settings):
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(settings.redis_url, decode_responses=True)
    import redis

    return redis.Redis.from_url(
        settings.redis_url, decode_responses=True, health_check_interval=30,
        socket_connect_timeout=limits.redis_connect_timeout_s,
    )


def async_client(settings: Settings) -> Any:
    if settings.redis_url is None:
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=embedded_server(), decode_responses=True)
    if _is_cluster(settings):
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(
            settings.redis_url, decode_responses=True,
            max_connections=limits.redis_connections_max,
        )
    import redis.asyncio

    # A blocking pool: a burst of requests waits for a connection instead of failing.
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        settings.redis_url, decode_responses=True, health_check_interval=30,
        max_connections=limits.redis_connections_max, timeout=limits.redis_pool_wait_s,
        socket_connect_timeout=limits.redis_connect_timeout_s,
    )
    return redis.asyncio.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
