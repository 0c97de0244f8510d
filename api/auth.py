"""Bearer tokens and roles.

Tokens come from RESERVES_ADMIN_TOKENS / RESERVES_SERVICE_TOKENS, or are created with
`reserves token create` and kept in Redis as SHA-256 digests only (hash `{prefix}:tokens`).
A presented token is hashed and compared in constant time with the configured digests, or
looked up by its digest; the token itself is never stored or logged. Its identity (for the
audit log) is the token's name, or `env-<role>-<first 8 hex of its digest>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from api import limits
from engine.config import Settings


class Role(StrEnum):
    admin = "admin"
    service = "service"


@dataclass(frozen=True, slots=True)
class Principal:
    identity: str
    role: Role
    digest: str  # SHA-256 hex of the token: the rate limiter's key

    def may(self, role: Role) -> bool:
        return self.role is Role.admin or self.role is role


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    return token


class TokenBook:
    """Resolves tokens to principals: the configured ones first, then those kept in Redis."""

    def __init__(self, settings: Settings, client: Any) -> None:
        self.client = client
        self.key = f"{settings.key_prefix}:tokens"
        self._configured: list[tuple[str, Principal]] = []
        for role, tokens in ((Role.admin, settings.admin_tokens),
                             (Role.service, settings.service_tokens)):
            for token in tokens:
                d = digest_of(token)
                self._configured.append((d, Principal(f"env-{role}-{d[:8]}", role, d)))
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    @property
    def has_configured(self) -> bool:
        return bool(self._configured)

    async def resolve(self, token: str) -> Principal | None:
        d = digest_of(token)
        found: Principal | None = None
        for configured, principal in self._configured:  # every entry, to keep the time flat
            if hmac.compare_digest(configured, d):
                found = principal
        if found is not None:
            return found
        now = time.monotonic()
        cached = self._cache.get(d)
        if cached is not None and cached[0] > now:
            return cached[1]
        raw = await self.client.hget(self.key, d)
        principal = _principal(raw, d)
        if len(self._cache) >= limits.token_cache_max:
            self._cache.clear()
        self._cache[d] = (now + limits.token_cache_ttl_s, principal)
        return principal


def _principal(raw: str | None, digest: str) -> Principal | None:
    if not raw:
        return None
    record = json.loads(raw)
    return Principal(record["name"], Role(record["role"]), digest)


def new_token() -> str:
    return "rsv_" + secrets.token_urlsafe(limits.token_bytes)


def create_token(client: Any, settings: Settings, role: Role, name: str,
                 created_ms: int) -> str:
    """Store a new token's digest (sync client) and return the token: shown once, never kept."""
    token = new_token()
    record = json.dumps({"name": name, "role": role.value, "created_ms": created_ms})
    client.hset(f"{settings.key_prefix}:tokens", digest_of(token), record)
    return token


def stored_tokens(client: Any, settings: Settings) -> list[dict[str, Any]]:
    rows = client.hgetall(f"{settings.key_prefix}:tokens")
    return sorted(({"digest": d[:12], **json.loads(v)} for d, v in rows.items()),
                  key=lambda r: r["created_ms"])


def revoke_token(client: Any, settings: Settings, name: str) -> int:
    key = f"{settings.key_prefix}:tokens"
    doomed = [d for d, v in client.hgetall(key).items() if json.loads(v)["name"] == name]
    return int(client.hdel(key, *doomed)) if doomed else 0
