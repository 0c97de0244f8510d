"""Security of the HTTP API through the real stack (`reserves serve` under uvicorn, real Redis):
every route refuses a missing or bad token (401) and the wrong role (403), bodies over the
limit get 413, a token past its rate gets 429 with Retry-After, no token or secret reaches the
server's log, and the audit log in Postgres holds every admin change with who, from where,
what and how it ended."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from starlette.routing import Mount, Route

from api import limits as api_limits
from api.app import create_app
from api.auth import Role, create_token, digest_of, revoke_token
from engine.config import Settings
from tests.api_server import ADMIN, ADMIN_TOKEN, SERVICE, SERVICE_TOKEN, Server, api_server
from tests.reliability import record
from tests.services import delete_prefix

pytestmark = pytest.mark.real

BAD = {"Authorization": "Bearer wrong-token-9876543210"}
CALLBACK_SECRET = "mm-callback-secret-5555555555"
# Routes anyone may call: liveness, metrics, the API description, the docs and dashboard
# pages (their data needs a token), and the mobile-money and liquidity callbacks (their
# signature is the authentication).
CALLBACKS = {"/wallet/mobile-money/callback", "/wallet/reserves/liquidity/callback"}
PUBLIC = {"/health", "/metrics", "/openapi.json", "/docs", "/docs/static/swagger-ui-init.js",
          "/dashboard", *CALLBACKS}
PUBLIC_MOUNTS = {"/docs/static", "/dashboard/static"}
PATH_VALUES = {"currency": "USDT", "account_type": "crypto", "reference_id": "sec-ref-1",
               "user_id": "u1"}


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PATH_VALUES.get(m.group(1), "x"), path)


def walk_routes() -> list[tuple[str, str, Role | None]]:
    """(method, concrete path, required role) of every route; plain routes must be public."""
    app = create_app(replace(Settings(), key_prefix="unused"))
    found: list[tuple[str, str, Role | None]] = []
    for route in app.routes:
        if isinstance(route, Mount):
            assert route.path in PUBLIC_MOUNTS, f"unexpected mount {route.path}"
            continue
        assert isinstance(route, Route), route
        role = getattr(route.endpoint, "required_role", None)
        if role is None:
            assert route.path in PUBLIC, f"{route.path} has no required role and is not public"
        for method in sorted(route.methods or ()):
            found.append((method, concrete(route.path), role))
    return found


ROUTES = walk_routes()
PROTECTED = [(m, p, r) for m, p, r in ROUTES if r is not None]


@dataclass
class Secured:
    server: Server
    prefix: str


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Secured]:
    prefix = f"sec{uuid.uuid4().hex[:10]}"
    env = {"RESERVES_REDIS_URL": redis_url, "RESERVES_KEY_PREFIX": prefix,
           "RESERVES_RATE_LIMIT_PER_S": "0", "RESERVES_MOBILE_MONEY_SECRET": CALLBACK_SECRET}
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with api_server(tmp_path_factory.mktemp("security"), env=env,
                        args=("--log-level", "debug")) as started:
            yield Secured(started, prefix)
    finally:
        delete_prefix(client, prefix)
        client.close()


@pytest.fixture
def server(secured: Secured) -> Server:
    return secured.server


def request(server: Server, method: str, path: str, headers: dict[str, str],
            **kwargs: Any) -> httpx.Response:
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return httpx.request(method, server.url + path, headers=headers, json=body, timeout=10,
                         **kwargs)


def test_route_walk_covers_the_api() -> None:
    paths = {p for _, p, _ in ROUTES}
    assert "/wallet/reserves/USDT/crypto/topup" in paths
    assert "/wallet/reserves/holds/sec-ref-1/commit" in paths
    assert {r for _, _, r in PROTECTED} == {Role.admin, Role.service}
    assert len(PROTECTED) >= 13


@pytest.mark.parametrize(("method", "path", "role"), PROTECTED,
                         ids=[f"{m} {p}" for m, p, _ in PROTECTED])
def test_protected_route_refuses_missing_bad_and_wrong_tokens(
        server: Server, method: str, path: str, role: Role) -> None:
    cases = [({}, 401, "missing bearer token"), (BAD, 401, "invalid token"),
             ({"Authorization": "Basic " + ADMIN_TOKEN}, 401, "missing bearer token"),
             ({"Authorization": "Bearer"}, 401, "missing bearer token")]
    if role is Role.admin:
        cases.append((SERVICE, 403, "this endpoint needs the admin role"))
    for headers, status, message in cases:
        r = request(server, method, path, headers)
        assert r.status_code == status, (headers, r.status_code, r.text)
        record("security: requests with no, bad or wrong-role token refused")
        if method != "HEAD":
            assert r.json() == {"success": False, "error": message,
                                "code": "unauthorized" if status == 401 else "forbidden"}
        if status == 401:
            assert r.headers["www-authenticate"] == "Bearer"
    # The right role passes authentication (whatever the handler then says of the empty input).
    r = request(server, method, path, ADMIN if role is Role.admin else SERVICE)
    assert r.status_code not in (401, 403), r.text


@pytest.mark.parametrize("method,path", [(m, p) for m, p, r in ROUTES if r is None and m != "HEAD"])
def test_public_routes_need_no_token(server: Server, method: str, path: str) -> None:
    r = request(server, method, path, {})
    if path in CALLBACKS:  # no signature: refused, and no bearer challenge
        assert r.status_code == 401, r.text
        assert "www-authenticate" not in r.headers
    else:
        assert r.status_code == 200, (path, r.text)


def test_service_token_passes_admin_and_service_checks_only_for_its_role(server: Server) -> None:
    r = httpx.get(server.url + "/wallet/reserves/holds/nothing-here", headers=ADMIN, timeout=10)
    assert r.status_code == 404  # admin may use service routes
    r = httpx.get(server.url + "/wallet/reserves/status", headers=SERVICE, timeout=10)
    assert r.status_code == 403


def balance(server: Server) -> dict[str, Any]:
    r = httpx.get(server.url + "/wallet/reserves/USDT/crypto/balance", headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json()["reserve"])


def test_body_over_the_limit_is_refused_with_413(server: Server) -> None:
    before = balance(server)
    url = server.url + "/wallet/reserves/USDT/crypto/topup"
    padding = "x" * (api_limits.body_bytes_max + 1)
    big = json.dumps({"amount": "5", "source_reference": "big-1", "pad": padding}).encode()
    r = httpx.post(url, headers={**ADMIN, "Content-Type": "application/json"}, content=big,
                   timeout=10)
    assert r.status_code == 413, r.text
    assert r.json() == {"success": False, "code": "body_too_large",
                        "error": f"request body exceeds {api_limits.body_bytes_max} bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for i in range(0, len(big), 4096):
            yield big[i:i + 4096]

    r = httpx.post(url, headers={**ADMIN, "Content-Type": "application/json"}, content=chunks(),
                   timeout=10)
    assert r.status_code == 413, r.text
    # Unauthenticated: refused before anything is read, still 413 (the limit comes first).
    r = httpx.post(url, headers={"Content-Type": "application/json"}, content=big, timeout=10)
    assert r.status_code == 413
    assert balance(server) == before
    # Just under the limit is read and handled.
    small = json.dumps({"amount": "5", "source_reference": "big-2"}).encode()
    r = httpx.post(url, headers=ADMIN, content=small, timeout=10)
    assert r.status_code == 200, r.text
    assert balance(server)["total_balance"] == before["total_balance"] + 5


def test_rate_limit_per_token_answers_429_with_retry_after(tmp_path: Path,
                                                           redis_url: str) -> None:
    rate_per_s = 1.0
    burst = int(rate_per_s * api_limits.rate_burst_factor)
    env = {"RESERVES_REDIS_URL": redis_url, "RESERVES_KEY_PREFIX": f"rl{uuid.uuid4().hex[:10]}",
           "RESERVES_RATE_LIMIT_PER_S": str(rate_per_s)}
    with api_server(tmp_path, env=env) as server, httpx.Client(base_url=server.url,
                                                                timeout=10) as http:
        started = time.monotonic()
        statuses = [http.get("/wallet/reserves/status", headers=ADMIN) for _ in range(12)]
        elapsed_s = time.monotonic() - started
        ok = [r for r in statuses if r.status_code == 200]
        limited = [r for r in statuses if r.status_code == 429]
        assert len(ok) + len(limited) == len(statuses)
        # The bucket starts full (burst) and refills at rate_per_s.
        assert burst <= len(ok) <= burst + int(elapsed_s * rate_per_s) + 1
        for r in limited:
            assert r.json() == {"success": False, "error": "rate limit exceeded",
                                "code": "rate_limited"}
            assert int(r.headers["retry-after"]) >= 1
        # Per token: the service token has its own bucket.
        assert http.post("/wallet/reserves/USDT/crypto/check", headers=SERVICE,
                         json={"amount": "1"}).status_code == 200
        # A bad token is refused before it can use anyone's bucket.
        assert http.get("/wallet/reserves/status", headers=BAD).status_code == 401
        # After Retry-After the token may go on.
        time.sleep(int(limited[-1].headers["retry-after"]))
        assert http.get("/wallet/reserves/status", headers=ADMIN).status_code == 200
        # Public routes are not rate limited.
        assert all(http.get("/health").status_code == 200 for _ in range(10))


def test_no_token_or_secret_in_the_log(secured: Secured, redis_url: str) -> None:
    """Failed and successful auth of env tokens and a stored token, the callback secret in use:
    none of them appears in the server's output (access log on, at debug level here)."""
    server, prefix = secured.server, secured.prefix
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    settings = replace(Settings(), key_prefix=prefix, redis_url=redis_url)
    stored = create_token(client, settings, Role.admin, "sec-stored", 0)
    secrets = [ADMIN_TOKEN, SERVICE_TOKEN, stored, CALLBACK_SECRET, BAD["Authorization"][7:]]
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/wallet/reserves/status",
                            headers={"Authorization": f"Bearer {stored}"}).status_code == 200
            for token in secrets:  # as a bearer, in the query, as the wrong scheme
                http.get("/wallet/reserves/status", headers={"Authorization": f"Bearer {token}"})
                http.get("/wallet/reserves/status", headers={"Authorization": f"Basic {token}"})
                http.post("/wallet/reserves/USDT/crypto/topup",
                          headers={"Authorization": f"Bearer {token}"},
                          json={"amount": "1", "source_reference": "log-1"})
            http.post("/wallet/mobile-money/callback", content=b'{"reference_id": "x"}',
                      headers={"X-Signature": "0" * 64})
    finally:
        revoke_token(client, settings, "sec-stored")
        client.close()
    log = server.log()
    assert "GET /wallet/reserves/status" in log  # the access log is on: the check is not vacuous
    for secret in secrets:
        assert secret not in log
    assert digest_of(ADMIN_TOKEN) not in log  # nor the full digest



def test_audit_log_holds_every_admin_change(tmp_path: Path, redis_url: str,
                                            fresh_database_url: str) -> None:
    env = {"RESERVES_REDIS_URL": redis_url, "RESERVES_KEY_PREFIX": f"au{uuid.uuid4().hex[:10]}",
           "RESERVES_DATABASE_URL": fresh_database_url, "RESERVES_PERSIST_IN_PROCESS": "1",
           "RESERVES_RATE_LIMIT_PER_S": "0"}
    acct = "/wallet/reserves/USDT/crypto"
    with api_server(tmp_path, env=env) as server, httpx.Client(base_url=server.url,
                                                                timeout=10) as http:
        calls = [
            ("POST", f"{acct}/topup", {"amount": "100", "source_reference": "au-top-1"}, 200),
            ("POST", f"{acct}/topup", {"amount": "100", "source_reference": "au-top-1"}, 200),
            ("POST", f"{acct}/withdraw", {"amount": "30", "destination_reference": "au-w-1"}, 200),
            ("POST", f"{acct}/withdraw", {"amount": "1000", "destination_reference": "au-w-2"},
             409),
            ("POST", f"{acct}/topup", {"amount": "-5", "source_reference": "au-top-2"}, 400),
            ("POST", "/wallet/reserves/cache/clear", None, 200),
        ]
        first_ids = []
        for method, path, body, status in calls:
            r = http.request(method, path, headers=ADMIN, json=body)
            assert r.status_code == status, r.text
            first_ids.append(r.json().get("transaction_id"))
        # Refused before the handler (wrong role, no token): audited too, with who asked.
        assert http.post(f"{acct}/topup", headers=SERVICE,
                         json={"amount": "1", "source_reference": "au-x"}).status_code == 403
        assert http.post(f"{acct}/topup", json={"amount": "1",
                                                "source_reference": "au-y"}).status_code == 401
        rows = _wait_for_audit_rows(fresh_database_url, 7)
    actor = f"env-admin-{digest_of(ADMIN_TOKEN)[:8]}"

    def req(path: str, body: dict[str, str], route: str, role: str = "admin") -> dict[str, Any]:
        return {"method": "POST", "path": path, "route": route, "role": role, "body": body}

    top = {"amount": "100", "source_reference": "au-top-1"}
    out = {"amount": "30", "destination_reference": "au-w-1"}
    short = {"amount": "1000", "destination_reference": "au-w-2"}
    bad = {"amount": "-5", "source_reference": "au-top-2"}
    label = "RESERVE_USDT_CRYPTO"
    ids = [r[-1]["transaction_id"] for r in rows[:2]]
    assert ids == [first_ids[0], first_ids[2]]  # the transaction ids the API answered
    # (action, account, reference, request, result); the idempotent repeat changed nothing.
    assert [tuple(r[1:]) for r in rows[:5]] == [
        ("reserve_topup", "127.0.0.1", label, "au-top-1", req(f"{acct}/topup", top, "top_up"),
         {"transaction_id": ids[0], "operation": "reserve_topup", "amount_minor": 100_000_000,
          "total_after_minor": 100_000_000, "locked_after_minor": 0}),
        ("reserve_withdrawal", "127.0.0.1", label, "au-w-1",
         req(f"{acct}/withdraw", out, "withdraw"),
         {"transaction_id": ids[1], "operation": "reserve_withdrawal",
          "amount_minor": 30_000_000, "total_after_minor": 70_000_000,
          "locked_after_minor": 0}),
        ("reserve_withdrawal_refused", "127.0.0.1", "", "au-w-2",
         req(f"{acct}/withdraw", short, "withdraw"),
         {"status": 409, "code": "exceeds_available",
          "error": "Insufficient reserve balance. Required: 1000.0, Available: 70.0"}),
        ("reserve_topup_refused", "127.0.0.1", "", "au-top-2", req(f"{acct}/topup", bad, "top_up"),
         {"status": 400, "code": None, "error": "amount must be greater than zero"}),
        ("cache_clear", "127.0.0.1", "", "", req("/wallet/reserves/cache/clear", {}, "cache_clear"),
         {"applied": True}),
    ]
    service = f"env-service-{digest_of(SERVICE_TOKEN)[:8]}"
    assert [tuple(r) for r in rows[5:]] == [
        (service, "reserve_topup_refused", "127.0.0.1", "", "au-x",
         req(f"{acct}/topup", {"amount": "1", "source_reference": "au-x"}, "top_up", "service"),
         {"status": 403, "code": "forbidden", "error": "this endpoint needs the admin role"}),
        ("", "reserve_topup_refused", "127.0.0.1", "", "au-y",
         req(f"{acct}/topup", {"amount": "1", "source_reference": "au-y"}, "top_up", ""),
         {"status": 401, "code": "unauthorized", "error": "missing bearer token"}),
    ]
    rows = rows[:5]
    assert {r[0] for r in rows} == {actor}
    assert ADMIN_TOKEN not in json.dumps([list(map(str, r)) for r in rows])


def _wait_for_audit_rows(database_url: str, count: int, timeout_s: float = 30.0) -> list[Any]:
    engine = sa.create_engine(database_url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with engine.connect() as conn:
                try:
                    rows = list(conn.execute(sa.text(
                        "SELECT actor, action, ip, account, reference, request, result "
                        "FROM audit_log ORDER BY event_id")))
                except sa.exc.ProgrammingError:  # the server has not migrated yet
                    rows = []
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)
    finally:
        engine.dispose()
