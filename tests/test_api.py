"""The HTTP API through the real stack: `reserves serve` (uvicorn) on a loopback port, the real
Redis and a Postgres database of its own, the persister running inside the server."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from engine.config import Settings
from persistence.reconcile import reconcile
from tests import services
from tests.api_server import ADMIN, SERVICE, Server, api_server

pytestmark = pytest.mark.real


def exact(response: httpx.Response) -> Any:
    """The body with numbers as Decimals: what the server wrote, not a float's rounding."""
    return json.loads(response.text, parse_float=Decimal)


@pytest.fixture
def server(tmp_path: Path, redis_url: str, fresh_database_url: str) -> Iterator[Server]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    env = {"RESERVES_REDIS_URL": redis_url, "RESERVES_DATABASE_URL": fresh_database_url,
           "RESERVES_KEY_PREFIX": prefix, "RESERVES_PERSIST_IN_PROCESS": "1"}
    with api_server(tmp_path, env) as started:
        started.env = env  # type: ignore[attr-defined]
        yield started
    services.delete_prefix_at(redis_url, prefix)


def settings_of(server: Server) -> Settings:
    env = server.env  # type: ignore[attr-defined]
    return replace(Settings(), redis_url=env["RESERVES_REDIS_URL"],
                   database_url=env["RESERVES_DATABASE_URL"], key_prefix=env["RESERVES_KEY_PREFIX"])


wait_for = functools.partial(services.wait_for, timeout_s=20.0)


def post(server: Server, path: str, body: Any, headers: dict[str, str] = ADMIN) -> httpx.Response:
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return httpx.post(server.url + path, content=content, timeout=10,
                      headers={**headers, "Content-Type": "application/json"})


def get(server: Server, path: str, headers: dict[str, str] = ADMIN) -> httpx.Response:
    return httpx.get(server.url + path, headers=headers, timeout=10)


def test_seed_curl_flow(server: Server) -> None:
    r = post(server, "/wallet/reserves/USDT/crypto/topup",
             '{"amount": 10000.0, "source_reference": "initial_setup"}')
    assert r.status_code == 200, r.text
    body = exact(r)
    assert set(body) == {"success", "topped_up_amount", "new_total_balance", "transaction_id"}
    assert body["success"] is True and isinstance(body["transaction_id"], int)
    assert '"topped_up_amount":10000.0' in r.text and '"new_total_balance":10000.0' in r.text

    status = exact(get(server, "/wallet/reserves/status"))
    assert status["success"] is True
    reserves = status["reserves"]
    assert set(reserves) == {"crypto", "fiat", "summary"}
    usdt = reserves["crypto"]["USDT"]
    assert {k: usdt[k] for k in ("currency", "account_type", "total_balance", "available_balance",
                                 "locked_balance", "utilization_percentage", "status")} == {
        "currency": "USDT", "account_type": "crypto", "total_balance": 10000,
        "available_balance": 10000, "locked_balance": 0, "utilization_percentage": 0,
        "status": "healthy"}
    assert isinstance(usdt["account_id"], int) and re.fullmatch(r"RUSDTc\d+", usdt["account_number"])
    assert set(reserves["fiat"]) >= {"UGX", "KES", "USD", "EUR", "NGN"}
    assert reserves["summary"] == {"overall_status": "healthy", "critical_reserves": [],
                                   "warning_reserves": []}

    r = post(server, "/wallet/reserves/USDT/crypto/reserve",
             {"amount": "2500", "reference_id": "swap_001", "operation_type": "swap"}, SERVICE)
    assert r.status_code == 200, r.text
    held = exact(r)
    assert (held["reference_id"], held["reserved_amount"], held["available_balance"],
            held["locked_balance"], held["status"]) == ("swap_001", 2500, 7500, 2500, "healthy")

    balance = exact(get(server, "/wallet/reserves/USDT/crypto/balance"))
    assert balance["success"] is True
    assert (balance["reserve"]["total_balance"], balance["reserve"]["available_balance"],
            balance["reserve"]["locked_balance"], balance["reserve"]["utilization_percentage"]) == (
        10000, 7500, 2500, 25)

    r = post(server, "/wallet/reserves/USDT/crypto/withdraw",
             {"amount": 500.0, "destination_reference": "maintenance_withdrawal"})
    assert r.status_code == 200, r.text
    assert exact(r)["withdrawn_amount"] == 500 and exact(r)["new_total_balance"] == 9500

    r = post(server, "/wallet/reserves/USDT/crypto/withdraw",
             {"amount": 8000, "destination_reference": "too_much"})
    assert r.status_code == 409
    refused = exact(r)
    assert refused["success"] is False
    assert refused["error"] == "Insufficient reserve balance. Required: 8000.0, Available: 7000.0"
    assert refused["reserve_status"]["is_sufficient"] is False

    def analytics() -> dict[str, Any] | None:
        data = exact(get(server, "/wallet/reserves/analytics?period_days=7"))["analytics"]
        return data if data["total_transactions"] == 3 else None

    data = wait_for(analytics, "the persister to write 3 money events")
    assert data == {"period_days": 7, "total_transactions": 3,
                    "by_operation": {"reserve_lock": 1, "reserve_topup": 1,
                                     "reserve_withdrawal": 1},
                    "by_currency": {"USDT": {"total_volume": 10500, "transaction_count": 3,
                                             "operations": {"reserve_lock": 1, "reserve_topup": 1,
                                                            "reserve_withdrawal": 1}}}}

    r = post(server, "/wallet/reserves/cache/clear", "")
    assert r.status_code == 200 and exact(r)["success"] is True

    settings = settings_of(server)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        wait_for(lambda: not reconcile(client, settings, settings.database_url),
                 "Redis and Postgres to agree")
    finally:
        client.close()


def test_holds_commit_release_and_repeats(server: Server) -> None:
    assert post(server, "/wallet/reserves/KES/fiat/topup",
                {"amount": "1000.50", "source_reference": "t1"}).status_code == 200
    for ref, amount in (("h1", "100.25"), ("h2", "50")):
        r = post(server, "/wallet/reserves/KES/fiat/reserve",
                 {"amount": amount, "reference_id": ref, "operation_type": "sell",
                  "ttl_seconds": 600}, SERVICE)
        assert r.status_code == 200, r.text
    again = post(server, "/wallet/reserves/KES/fiat/reserve",
                 {"amount": "100.25", "reference_id": "h1", "operation_type": "sell"}, SERVICE)
    assert again.status_code == 200 and exact(again)["locked_balance"] == Decimal("150.25")

    hold = exact(get(server, "/wallet/reserves/holds/h1", SERVICE))["hold"]
    assert (hold["state"], hold["amount"], hold["currency"]) == ("pending", Decimal("100.25"), "KES")
    assert hold["expires_at_ms"] > hold["created_at_ms"]

    r = post(server, "/wallet/reserves/holds/h1/commit", {"amount": "40.25"}, SERVICE)
    assert r.status_code == 200, r.text
    done = exact(r)
    assert (done["hold_state"], done["committed_amount"], done["released_amount"],
            done["locked_balance"], done["available_balance"]) == (
        "committed", Decimal("40.25"), 60, 50, Decimal("910.25"))
    repeat = exact(post(server, "/wallet/reserves/holds/h1/commit", "", SERVICE))
    assert repeat["transaction_id"] is None  # a repeat journals nothing
    assert {**repeat, "transaction_id": done["transaction_id"]} == done

    released = post(server, "/wallet/reserves/holds/h2/release", "", SERVICE)
    assert released.status_code == 200 and exact(released)["locked_balance"] == 0
    assert post(server, "/wallet/reserves/holds/h2/release", "", SERVICE).status_code == 200
    late = post(server, "/wallet/reserves/holds/h2/commit", "", SERVICE)
    assert late.status_code == 409 and "already released" in exact(late)["error"]
    assert get(server, "/wallet/reserves/holds/nope", SERVICE).status_code == 404
    total = exact(get(server, "/wallet/reserves/KES/fiat/balance"))["reserve"]["total_balance"]
    assert total == Decimal("960.25")


BAD_REQUESTS: list[tuple[str, str, str | bytes, dict[str, str], int, str]] = [
    ("POST", "/wallet/reserves/USDT/crypto/topup", "{not json", ADMIN, 400, "malformed JSON"),
    ("POST", "/wallet/reserves/USDT/crypto/topup", "[1, 2]", ADMIN, 400, "JSON object"),
    ("POST", "/wallet/reserves/USDT/crypto/topup", '{"source_reference": "x"}', ADMIN, 400,
     "amount is required"),
    ("POST", "/wallet/reserves/USDT/crypto/topup", '{"amount": 5}', ADMIN, 400,
     "source_reference is required"),
    ("POST", "/wallet/reserves/USDT/crypto/topup", '{"amount": 0, "source_reference": "x"}',
     ADMIN, 400, "greater than zero"),
    ("POST", "/wallet/reserves/USDT/crypto/topup", '{"amount": -5, "source_reference": "x"}',
     ADMIN, 400, "greater than zero"),
    ("POST", "/wallet/reserves/USDT/crypto/topup", '{"amount": NaN, "source_reference": "x"}',
     ADMIN, 400, "malformed JSON"),
    ("POST", "/wallet/reserves/USDT/crypto/topup", '{"amount": "NaN", "source_reference": "x"}',
     ADMIN, 400, "finite"),
    ("POST", "/wallet/reserves/USDT/crypto/topup", '{"amount": "Infinity", "source_reference": "x"}',
     ADMIN, 400, "finite"),
    ("POST", "/wallet/reserves/USDT/crypto/topup", '{"amount": true, "source_reference": "x"}',
     ADMIN, 400, "must be a number"),
    ("POST", "/wallet/reserves/USDT/crypto/topup",
     '{"amount": 1.0000001, "source_reference": "x"}', ADMIN, 400, "more than 6 decimal places"),
    ("POST", "/wallet/reserves/UGX/fiat/topup", '{"amount": 1.5, "source_reference": "x"}',
     ADMIN, 400, "more than 0 decimal places"),
    ("POST", "/wallet/reserves/USDT/crypto/topup", '{"amount": 1e30, "source_reference": "x"}',
     ADMIN, 400, "largest supported amount"),
    ("POST", "/wallet/reserves/USDT/crypto/topup", '{"amount": 1, "source_reference": "a b"}',
     ADMIN, 400, "source_reference"),
    ("POST", "/wallet/reserves/DOGE/crypto/topup", '{"amount": 1, "source_reference": "x"}',
     ADMIN, 404, "Unknown currency: DOGE"),
    ("POST", "/wallet/reserves/USDT/stock/topup", '{"amount": 1, "source_reference": "x"}',
     ADMIN, 404, "Unknown account type"),
    ("GET", "/wallet/reserves/USDT/fiat/balance", "", ADMIN, 404, "crypto currency, not fiat"),
    ("POST", "/wallet/reserves/USDT/crypto/reserve",
     '{"amount": 1000, "reference_id": "r1", "operation_type": "swap"}', SERVICE, 409,
     "Insufficient reserve balance. Required: 1000.0, Available: 500.0"),
    ("POST", "/wallet/reserves/USDT/crypto/reserve",
     '{"amount": 1, "reference_id": "held", "operation_type": "swap"}', SERVICE, 409,
     "already used with a different amount"),
    ("POST", "/wallet/reserves/USDT/crypto/reserve",
     '{"amount": 1, "reference_id": "r2", "operation_type": "swap", "ttl_seconds": 0}', SERVICE,
     400, "ttl_seconds"),
    ("POST", "/wallet/reserves/USDT/crypto/withdraw",
     '{"amount": 501, "destination_reference": "w"}', ADMIN, 409,
     "Insufficient reserve balance. Required: 501.0, Available: 500.0"),
    ("POST", "/wallet/reserves/holds/held/commit", '{"amount": 3}', SERVICE, 409,
     "more than the held amount"),
    ("GET", "/wallet/reserves/analytics?period_days=0", "", ADMIN, 400, "period_days"),
    ("GET", "/wallet/reserves/analytics?period_days=x", "", ADMIN, 400, "period_days"),
    ("GET", "/wallet/reserves/status", "", {}, 401, "missing bearer token"),
    ("GET", "/wallet/reserves/status", "", {"Authorization": "Bearer wrong"}, 401, "invalid token"),
    ("GET", "/wallet/reserves/status", "", {"Authorization": "Basic abc"}, 401, "missing bearer"),
    ("GET", "/wallet/reserves/status", "", SERVICE, 403, "admin role"),
    ("POST", "/wallet/reserves/USDT/crypto/topup", '{"amount": 1, "source_reference": "x"}',
     SERVICE, 403, "admin role"),
    ("GET", "/wallet/nowhere", "", ADMIN, 404, "Not Found"),
    ("DELETE", "/wallet/reserves/status", "", ADMIN, 405, "Method Not Allowed"),
]


def _state(server: Server) -> tuple[Any, int]:
    settings = settings_of(server)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        from engine.keys import KeySpace

        keys = KeySpace(settings.key_prefix, settings.shard_count)
        seq = client.get(keys.seq(0))
    finally:
        client.close()
    reserves = exact(get(server, "/wallet/reserves/status"))["reserves"]
    for group in ("crypto", "fiat"):
        for reserve in reserves[group].values():
            reserve.pop("forecast", None)  # moves with the clock
    return reserves, int(seq or 0)


def test_every_error_is_json_with_its_status_and_changes_nothing(server: Server) -> None:
    assert post(server, "/wallet/reserves/USDT/crypto/topup",
                {"amount": 504, "source_reference": "seed"}).status_code == 200
    assert post(server, "/wallet/reserves/USDT/crypto/reserve",
                {"amount": 2, "reference_id": "held", "operation_type": "swap"},
                SERVICE).status_code == 200
    assert post(server, "/wallet/reserves/USDT/crypto/withdraw",
                {"amount": 2, "destination_reference": "w0"}).status_code == 200
    before, seq_before = _state(server)
    failures = []
    for method, path, body, headers, status, message in BAD_REQUESTS:
        r = httpx.request(method, server.url + path, content=body, timeout=10,
                          headers={**headers, "Content-Type": "application/json"})
        parsed = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if (r.status_code != status or parsed.get("success") is not False
                or message not in parsed.get("error", "")):
            failures.append(f"{method} {path} {body!r}: {r.status_code} {r.text}")
    assert not failures, "\n".join(failures)
    after, seq_after = _state(server)
    assert after == before
    # The journal grew by audit records of the refused admin changes only: no money moved.
    settings = settings_of(server)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        from engine.journal import JournalEvent
        from engine.keys import KeySpace

        stream = KeySpace(settings.key_prefix, settings.shard_count).stream(0)
        events = [JournalEvent.parse(i, f) for i, f in client.xrange(stream)]
    finally:
        client.close()
    late = [e for e in events if e.event_id > seq_before]
    assert len(late) == seq_after - seq_before
    # (so many refusals raise the refusal-rate alert: an alert_raised event, no money)
    assert {e.op for e in late} - {"alert_raised"} == {"audit"}
    assert {e.reference for e in late} >= {"reserve_topup_refused", "reserve_withdrawal_refused"}
    assert {e.reference for e in late if e.op == "alert_raised"} <= {"SYSTEM|refusal_rate"}


def test_amounts_are_exact_end_to_end(server: Server) -> None:
    r = post(server, "/wallet/reserves/BTC/crypto/topup",
             '{"amount": 12345678.12345678, "source_reference": "big"}')
    assert r.status_code == 200 and '"new_total_balance":12345678.12345678' in r.text
    r = post(server, "/wallet/reserves/BTC/crypto/reserve",
             '{"amount": "0.00000001", "reference_id": "sat", "operation_type": "swap"}', SERVICE)
    assert r.status_code == 200 and '"available_balance":12345678.12345677' in r.text
    status = get(server, "/wallet/reserves/BTC/crypto/balance")
    assert '"locked_balance":0.00000001' in status.text


def reserve_concurrently(server: Server, prefix: str, count: int) -> list[httpx.Response]:
    """count reserves of 100 USD at once, each on its own connection, references prefix0..."""

    async def hammer() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
            return await asyncio.gather(*(
                client.post("/wallet/reserves/USD/fiat/reserve", headers=SERVICE,
                            json={"amount": "100", "reference_id": f"{prefix}{i}",
                                  "operation_type": "swap"})
                for i in range(count)))

    return asyncio.run(hammer())


def test_200_concurrent_reserves_never_oversell(server: Server) -> None:
    assert post(server, "/wallet/reserves/USD/fiat/topup",
                {"amount": 10000, "source_reference": "pool"}).status_code == 200

    responses = reserve_concurrently(server, "c", 200)
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 100 + [409] * 100
    for r in responses:
        if r.status_code == 409:
            assert exact(r)["error"].startswith("Insufficient reserve balance. Required: 100.0")
    reserve = exact(get(server, "/wallet/reserves/USD/fiat/balance"))["reserve"]
    assert (reserve["total_balance"], reserve["locked_balance"], reserve["available_balance"],
            reserve["status"]) == (10000, 10000, 0, "critical")


def test_two_workers_share_one_redis_and_log_their_start(tmp_path: Path, redis_url: str,
                                                         fresh_database_url: str) -> None:
    """`reserves serve --workers 2`: two processes behind one port, one Redis; each worker's own
    log lines (logging set up again in each process) and its frozen start-up heap."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    env = {"RESERVES_REDIS_URL": redis_url, "RESERVES_DATABASE_URL": fresh_database_url,
           "RESERVES_KEY_PREFIX": prefix}
    try:
        with api_server(tmp_path, env, workers=2) as two:
            assert post(two, "/wallet/reserves/USD/fiat/topup",
                        {"amount": 5000, "source_reference": "pool"}).status_code == 200

            codes = sorted(r.status_code for r in reserve_concurrently(two, "w", 100))
            assert codes == [200] * 50 + [409] * 50
            reserve = exact(get(two, "/wallet/reserves/USD/fiat/balance"))["reserve"]
            assert (reserve["total_balance"], reserve["locked_balance"]) == (5000, 5000)
            wait_for(lambda: two.log().count("INFO reserves.api: reserves API ready") == 2,
                     "both workers started")
            log = two.log()
        assert log.count("INFO reserves.api: reserves API ready") == 2, log
        assert len(re.findall(r"reserves.api: start-up heap frozen out of the collector's walks",
                              log)) == 2, log
        assert len(set(re.findall(r"Started server process \[(\d+)\]", log))) == 2, log
    finally:
        services.delete_prefix_at(redis_url, prefix)


def test_status_cache_sees_changes_from_another_process(server: Server) -> None:
    first = exact(get(server, "/wallet/reserves/status"))["reserves"]["fiat"]["EUR"]
    settings = settings_of(server)
    from engine.service import ReserveService

    service = ReserveService(settings=settings)  # another client, not through this API process
    service.top_up_reserve("EUR", "12.34", "fiat", "side-door")
    second = exact(get(server, "/wallet/reserves/status"))["reserves"]["fiat"]["EUR"]
    assert second["total_balance"] - first["total_balance"] == Decimal("12.34")


def test_redis_unreachable_is_503_quickly(tmp_path: Path) -> None:
    from tests.services import free_port

    env = {"RESERVES_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
           "RESERVES_REDIS_CLUSTER": "0"}
    with api_server(tmp_path, env, healthy=False) as down:
        started = time.monotonic()
        r = post(down, "/wallet/reserves/USDT/crypto/reserve",
                 {"amount": 1, "reference_id": "x", "operation_type": "swap"}, SERVICE)
        elapsed_s = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert exact(r)["code"] == "redis_unavailable" and exact(r)["success"] is False
        assert elapsed_s < 10, elapsed_s  # bounded by the connect timeout, not hanging
        assert get(down, "/health").status_code == 503
        assert get(down, "/wallet/reserves/status").status_code == 503


def test_embedded_first_run_prints_an_admin_token(tmp_path: Path) -> None:
    """`make run`'s path: no configuration at all -> fakeredis + SQLite, a token printed once."""
    env = {"RESERVES_ADMIN_TOKENS": "", "RESERVES_SERVICE_TOKENS": "",
           "RESERVES_DATABASE_URL": ""}
    with api_server(tmp_path, env) as embedded:
        token = re.search(r"rsv_[A-Za-z0-9_-]+", embedded.log())
        assert token, embedded.log()
        auth = {"Authorization": f"Bearer {token.group(0)}"}
        r = post(embedded, "/wallet/reserves/UGX/fiat/topup",
                 {"amount": 50000000, "source_reference": "boot"}, auth)
        assert r.status_code == 200 and exact(r)["new_total_balance"] == 50000000
        wait_for(lambda: exact(get(embedded, "/wallet/reserves/analytics", auth))
                 ["analytics"]["total_transactions"] == 1, "the embedded persister")
        assert embedded.log().count(token.group(0)) == 1  # printed once, never logged
        # `reserves serve` freezes its start-up heap (RESERVES_GC_FREEZE defaults on there)
        assert re.search(r"start-up heap frozen out of the collector's walks: [1-9]\d+ objects",
                         embedded.log()), embedded.log()
    assert (tmp_path / "reserves.db").exists()


def test_token_create_gives_a_working_service_token(server: Server) -> None:
    env = {**{k: v for k, v in __import__("os").environ.items() if not k.startswith("RESERVES_")},
           **server.env}  # type: ignore[attr-defined]
    out = subprocess.run([sys.executable, "-m", "engine.cli", "token", "create", "--role",
                          "service", "--name", "desk-1"], env=env, capture_output=True, text=True,
                         check=True)
    token = out.stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    r = post(server, "/wallet/reserves/EUR/fiat/check", {"amount": "1.5"}, auth)
    assert r.status_code == 200 and exact(r)["is_sufficient"] is False
    assert get(server, "/wallet/reserves/status", auth).status_code == 403
    listing = subprocess.run([sys.executable, "-m", "engine.cli", "token", "list"], env=env,
                             capture_output=True, text=True, check=True).stdout
    assert "desk-1" in listing and token not in listing
    assert subprocess.run([sys.executable, "-m", "engine.cli", "token", "revoke", "desk-1"],
                          env=env, capture_output=True).returncode == 0
    time.sleep(5.5)  # the server remembers a looked-up token for api.limits.token_cache_ttl_s
    assert post(server, "/wallet/reserves/EUR/fiat/check", {"amount": "1"}, auth).status_code == 401


def test_embedded_restart_keeps_balances_and_ledger(tmp_path: Path) -> None:
    """The embedded default keeps nothing in fakeredis across restarts: the SQLite ledger does,
    and the next start reloads it (new events continue after the persisted ids)."""
    env = {"RESERVES_DATABASE_URL": ""}
    with api_server(tmp_path, env) as first:
        assert post(first, "/wallet/reserves/UGX/fiat/topup",
                    {"amount": 700, "source_reference": "a"}).status_code == 200
        assert post(first, "/wallet/reserves/UGX/fiat/reserve",
                    {"amount": 200, "reference_id": "keep", "operation_type": "sell"},
                    SERVICE).status_code == 200
        wait_for(lambda: exact(get(first, "/wallet/reserves/analytics"))
                 ["analytics"]["total_transactions"] == 2, "the first run's persister")
    with api_server(tmp_path, env) as second:
        reserve = exact(get(second, "/wallet/reserves/UGX/fiat/balance"))["reserve"]
        assert (reserve["total_balance"], reserve["locked_balance"]) == (700, 200)
        assert post(second, "/wallet/reserves/holds/keep/commit", "", SERVICE).status_code == 200
        wait_for(lambda: exact(get(second, "/wallet/reserves/analytics"))
                 ["analytics"]["total_transactions"] == 3, "the second run's events persisted")
