"""Seams of the HTTP layer (issue 15, items 9, 11 and 13), through the real app
(api.app.create_app) with httpx's ASGI transport, on fakeredis and on the real Redis: bad input
and Redis refusals answered 4xx / 503 with a code and nothing changed; every change and every
refused change audited and readable; repeats answered by one rule."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from redis import exceptions as redis_errors

from api import limits
from api.app import create_app
from api.auth import digest_of
from api.context import ApiConfig
from engine.config import Settings
from engine.batching import BatchingDriver
from engine.engine import ReserveEngine
from engine.journal import JournalEvent
from persistence.migrate import upgrade
from persistence.store import Store
from tests.api_server import ADMIN, ADMIN_TOKEN, SERVICE, SERVICE_TOKEN
from tests.services import redis_server

ACCT = "/wallet/reserves/USDT/crypto"


@pytest.fixture
def settings(backend: dict[str, Any], tmp_path: Path) -> Settings:
    return replace(backend["settings"], admin_tokens=(ADMIN_TOKEN,),
                   service_tokens=(SERVICE_TOKEN,),
                   database_url=f"sqlite:///{tmp_path / 'reserves.db'}")


async def _client(settings: Settings, client: Any) -> AsyncIterator[httpx.AsyncClient]:
    engine = ReserveEngine(client, settings)
    app = create_app(settings, engine=engine,
                     config=ApiConfig(background_tasks=False, rate_per_s=0))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                http.app = app  # type: ignore[attr-defined]
                yield http
    finally:
        await engine.close()


@pytest.fixture
async def http(backend: dict[str, Any], settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(settings, backend["async_factory"]()):
        yield client


async def _top_up(http: httpx.AsyncClient, amount: str, reference: str) -> httpx.Response:
    r = await http.post(f"{ACCT}/topup", headers=ADMIN,
                        json={"amount": amount, "source_reference": reference})
    assert r.status_code == 200, r.text
    return r


async def _balance(http: httpx.AsyncClient) -> tuple[Any, Any]:
    r = await http.get(f"{ACCT}/balance", headers=ADMIN)
    assert r.status_code == 200, r.text
    reserve = r.json()["reserve"]
    return reserve["total_balance"], reserve["locked_balance"]


# -- item 9: 4xx / 503 with a code, never 500 ---------------------------------------------------

HUGE = "1" + "0" * 5000
AMOUNT_ROUTES = [
    (f"{ACCT}/topup", ADMIN, '{"amount": %s, "source_reference": "h1"}'),
    (f"{ACCT}/withdraw", ADMIN, '{"amount": %s, "destination_reference": "h2"}'),
    (f"{ACCT}/check", SERVICE, '{"amount": %s}'),
    (f"{ACCT}/reserve", SERVICE,
     '{"amount": %s, "reference_id": "h3", "operation_type": "swap"}'),
    (f"{ACCT}/reserve", SERVICE,
     '{"amount": 1, "reference_id": "h4", "operation_type": "swap", "ttl_seconds": %s}'),
    ("/wallet/reserves/holds/held/commit", SERVICE, '{"amount": %s}'),
]


async def test_a_json_integer_of_thousands_of_digits_is_a_400(http: httpx.AsyncClient) -> None:
    await _top_up(http, "100", "seed")
    r = await http.post(f"{ACCT}/reserve", headers=SERVICE,
                        json={"amount": "10", "reference_id": "held", "operation_type": "swap"})
    assert r.status_code == 200, r.text
    before = await _balance(http)
    for path, headers, template in AMOUNT_ROUTES:
        r = await http.post(path, headers={**headers, "Content-Type": "application/json"},
                            content=template % HUGE)
        assert r.status_code == 400, (path, r.text)
        assert r.json() == {"success": False, "code": "malformed_json",
                            "error": "malformed JSON: an integer of more than 64 digits"}
    assert await _balance(http) == before


@pytest.mark.parametrize("path", ["/wallet/reserves/analytics?period_days=",
                                  "/wallet/reserves/alerts?limit=",
                                  "/wallet/reserves/recent?limit="])
@pytest.mark.parametrize("bad", ["\u00b2", "\u0663", "\uff11", "1" * 5000, "-1", "0", "x", ""])
async def test_a_query_integer_is_ascii_digits_within_bounds(http: httpx.AsyncClient, path: str,
                                                             bad: str) -> None:
    await _top_up(http, "100", "seed")
    before = await _balance(http)
    r = await http.get(path + bad, headers=ADMIN)
    assert r.status_code == 400, r.text
    name = path.rsplit("?", 1)[1].rstrip("=")
    maximum = {"period_days": 3650, "limit": 200}[name]
    assert r.json() == {"success": False, "code": "invalid_query_parameter",
                        "error": f"{name} must be a whole number from 1 to {maximum}"}
    assert await _balance(http) == before


@pytest.mark.parametrize("path", ["/wallet/reserves/analytics?period_days=7&period_days=",
                                  "/wallet/reserves/alerts?limit=&limit=",
                                  "/wallet/reserves/liquidity/requests?limit=5&limit="])
@pytest.mark.parametrize("second", ["6", "x"])
async def test_a_query_parameter_given_twice_is_refused(http: httpx.AsyncClient, path: str,
                                                        second: str) -> None:
    """Starlette reads the last of a repeated parameter; a client or proxy may read the first.
    Schemathesis found `?limit=&limit=6` answered 200."""
    r = await http.get(path + second, headers=ADMIN)
    assert r.status_code == 400, r.text
    name = path.split("?", 1)[1].split("=", 1)[0]
    assert r.json() == {"success": False, "code": "invalid_query_parameter",
                        "error": f"{name} must be given once"}


def _refuse_when(monkeypatch: pytest.MonkeyPatch, armed: list[bool], error: Exception) -> None:
    """Every asyncio command, pipeline and batch raises `error` while armed[0]: what a Redis
    server in that state answers (the scripts run through execute_command too)."""
    for cls, name in ((redis.asyncio.Redis, "execute_command"),
                      (redis.asyncio.client.Pipeline, "execute"), (BatchingDriver, "_evalsha")):
        real = getattr(cls, name)

        async def refusing(self: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            if armed[0]:
                raise error
            return await _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, refusing)


REFUSALS = [
    (redis_errors.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
     "redis_out_of_memory", "Redis is out of memory; retry later"),
    (redis_errors.ReadOnlyError("You can't write against a read only replica."),
     "redis_read_only", "Redis is a read-only replica; retry later"),
    (redis_errors.ResponseError("BUSY Redis is busy running a script."),
     "redis_busy", "Redis is busy running a script; retry later"),
    (redis_errors.BusyLoadingError("Redis is loading the dataset in memory"),
     "redis_loading", "Redis is loading its data; retry later"),
    (redis_errors.MasterDownError("Link with MASTER is down"),
     "redis_master_down", "Redis has lost its master; retry later"),
    (redis_errors.TryAgainError("Multiple keys request during rehashing of slot"),
     "redis_try_again", "Redis asks to try again; retry later"),
    (redis_errors.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
     "redis_error", "Redis refused the command; retry later"),
]


@pytest.mark.parametrize(("error", "code", "message"), REFUSALS,
                         ids=[r[1] for r in REFUSALS])
async def test_redis_refusals_are_503_with_their_code(
        http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, error: Exception, code: str,
        message: str) -> None:
    armed = [False]
    _refuse_when(monkeypatch, armed, error)
    if True:
        await _top_up(http, "100", "seed")
        before = await _balance(http)
        armed[0] = True
        calls = [("POST", f"{ACCT}/topup", ADMIN, {"amount": "1", "source_reference": "t2"}),
                 ("POST", f"{ACCT}/reserve", SERVICE,
                  {"amount": "1", "reference_id": "r1", "operation_type": "swap"}),
                 ("GET", "/wallet/reserves/status", ADMIN, None),
                 ("GET", "/wallet/reserves/recent", ADMIN, None)]
        for method, path, headers, body in calls:
            r = await http.request(method, path, headers=headers, json=body)
            assert (r.status_code, r.json()) == (
                503, {"success": False, "code": code, "error": message}), (path, r.text)
        armed[0] = False
        assert await _balance(http) == before


@pytest.mark.real
async def test_a_redis_at_maxmemory_answers_503_redis_out_of_memory(tmp_path: Path) -> None:
    settings = replace(Settings(), key_prefix="oom", admin_tokens=(ADMIN_TOKEN,),
                       service_tokens=(SERVICE_TOKEN,),
                       database_url=f"sqlite:///{tmp_path / 'reserves.db'}")
    with redis_server(extra_args=("--maxmemory-policy", "noeviction")) as url:
        client = redis.asyncio.Redis.from_url(url, decode_responses=True)
        async for http in _client(replace(settings, redis_url=url), client):
            await _top_up(http, "100", "seed")
            r = await http.post(f"{ACCT}/reserve", headers=SERVICE,
                                json={"amount": "10", "reference_id": "r0",
                                      "operation_type": "swap"})
            assert r.status_code == 200, r.text
            before = await _balance(http)
            await client.config_set("maxmemory", "1")  # every write is over it now
            calls = [(f"{ACCT}/topup", ADMIN, {"amount": "1", "source_reference": "t1"}),
                     (f"{ACCT}/withdraw", ADMIN,
                      {"amount": "1", "destination_reference": "w1"}),
                     (f"{ACCT}/reserve", SERVICE,
                      {"amount": "1", "reference_id": "r1", "operation_type": "swap"}),
                     ("/wallet/reserves/holds/r0/commit", SERVICE, {})]
            for path, headers, body in calls:
                r = await http.post(path, headers=headers, json=body)
                assert (r.status_code, r.json()) == (503, {
                    "success": False, "code": "redis_out_of_memory",
                    "error": "Redis is out of memory; retry later"}), (path, r.text)
            assert await _balance(http) == before  # reads still work


# -- item 13: one rule for every repeat ----------------------------------------------------------


async def _post(http: httpx.AsyncClient, path: str, body: Any,
                headers: dict[str, str]) -> dict[str, Any]:
    r = await http.post(path, headers=headers, json=body)
    assert r.status_code == 200, (path, r.text)
    return r.json()  # type: ignore[no-any-return]


async def test_every_repeat_answers_the_first_fields_with_no_transaction_id_and_balances_now(
        http: httpx.AsyncClient) -> None:
    """The rule (README, HTTP API): a repeat changes nothing and answers 200 with the first
    call's fields, `transaction_id: null` (nothing new was journalled) and the balances as they
    are now. Between each call and its repeat another call moves the balances."""
    top = {"amount": "100", "source_reference": "t1"}
    first = await _post(http, f"{ACCT}/topup", top, ADMIN)
    await _top_up(http, "50", "t2")
    assert await _post(http, f"{ACCT}/topup", top, ADMIN) == {
        **first, "new_total_balance": 150.0, "transaction_id": None}

    out = {"amount": "20", "destination_reference": "w1"}
    first = await _post(http, f"{ACCT}/withdraw", out, ADMIN)
    await _top_up(http, "5", "t3")
    assert await _post(http, f"{ACCT}/withdraw", out, ADMIN) == {
        **first, "new_total_balance": 135.0, "transaction_id": None}

    lock = {"amount": "10", "reference_id": "h1", "operation_type": "swap"}
    first = await _post(http, f"{ACCT}/reserve", lock, SERVICE)
    await _post(http, f"{ACCT}/reserve",
                {"amount": "5", "reference_id": "h2", "operation_type": "swap"}, SERVICE)
    assert await _post(http, f"{ACCT}/reserve", lock, SERVICE) == {
        **first, "available_balance": 120.0, "locked_balance": 15.0, "transaction_id": None}

    first = await _post(http, "/wallet/reserves/holds/h1/commit", {"amount": "4"}, SERVICE)
    await _top_up(http, "1", "t4")
    assert await _post(http, "/wallet/reserves/holds/h1/commit", {"amount": "4"}, SERVICE) == {
        **first, "available_balance": 127.0, "transaction_id": None}

    first = await _post(http, "/wallet/reserves/holds/h2/release", None, SERVICE)
    await _top_up(http, "1", "t5")
    assert await _post(http, "/wallet/reserves/holds/h2/release", None, SERVICE) == {
        **first, "available_balance": 133.0, "transaction_id": None}
    assert first["transaction_id"] is not None

    deposit = "/wallet/users/u1/USDT/deposit"
    first = await _post(http, deposit, {"amount": "7", "reference_id": "d1"}, SERVICE)
    await _post(http, deposit, {"amount": "3", "reference_id": "d2"}, SERVICE)
    assert await _post(http, deposit, {"amount": "7", "reference_id": "d1"}, SERVICE) == {
        **first, "new_total_balance": 10.0, "available_balance": 10.0, "applied": False,
        "transaction_id": None}


# -- item 11: every change and every refused change audited, and readable -----------------------


async def _journal(http: httpx.AsyncClient) -> list[JournalEvent]:
    ctx = http.app.state.ctx  # type: ignore[attr-defined]
    events: list[JournalEvent] = []
    for stream in ctx.engine.ops.keys.streams():
        events += [JournalEvent.parse(i, f) for i, f in await ctx.engine.client.xrange(stream)]
    return sorted(events, key=lambda e: e.event_id)


async def _persist(http: httpx.AsyncClient) -> None:
    """What the persister does, at once: the journal into the test's database."""
    url = http.app.state.ctx.settings.database_url  # type: ignore[attr-defined]
    upgrade(url)
    store = Store(url)
    try:
        store.write_batch(await _journal(http))
    finally:
        store.close()


async def _audit(http: httpx.AsyncClient, query: str = "") -> dict[str, Any]:
    r = await http.get(f"/wallet/reserves/audit{query}", headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


ADMIN_ID = f"env-admin-{digest_of(ADMIN_TOKEN)[:8]}"
SERVICE_ID = f"env-service-{digest_of(SERVICE_TOKEN)[:8]}"


async def test_every_change_and_every_refusal_is_audited(http: httpx.AsyncClient) -> None:
    json_headers = {"Content-Type": "application/json"}
    calls: list[tuple[str, str, dict[str, str], Any, int]] = [
        ("POST", f"{ACCT}/topup", ADMIN, {"amount": "100", "source_reference": "t1"}, 200),
        ("POST", f"{ACCT}/topup", ADMIN, "{not json", 400),
        ("POST", f"{ACCT}/topup", ADMIN, {"source_reference": "t2"}, 400),
        ("POST", f"{ACCT}/topup", ADMIN, '{"amount": NaN, "source_reference": "t3"}', 400),
        ("POST", f"{ACCT}/withdraw", ADMIN, {"amount": "500", "destination_reference": "w1"},
         409),
        ("POST", f"{ACCT}/reserve", SERVICE,
         {"amount": "10", "reference_id": "h1", "operation_type": "swap"}, 200),
        ("POST", f"{ACCT}/reserve", SERVICE,
         {"amount": "1000", "reference_id": "h2", "operation_type": "swap"}, 409),
        ("POST", "/wallet/reserves/holds/h1/commit", SERVICE, {"amount": "4"}, 200),
        ("POST", "/wallet/reserves/holds/nope/release", SERVICE, None, 404),
        ("POST", "/wallet/users/u1/USDT/deposit", SERVICE,
         {"amount": "7", "reference_id": "d1"}, 200),
        ("POST", "/wallet/users/u1/USDT/deposit", SERVICE,
         {"amount": "-7", "reference_id": "d2"}, 400),
        ("POST", f"{ACCT}/topup", SERVICE, {"amount": "1", "source_reference": "t4"}, 403),
        ("POST", f"{ACCT}/reserve", {}, {"amount": "1", "reference_id": "h3",
                                         "operation_type": "swap"}, 401),
        ("POST", "/wallet/reserves/cache/clear", ADMIN, None, 200),
    ]
    for method, path, headers, body, status in calls:
        content = body if isinstance(body, str) else None
        r = await http.request(method, path, headers={**headers, **json_headers},
                               content=content, json=None if content else body)
        assert r.status_code == status, (path, r.text)
    await _persist(http)
    page = await _audit(http, "?limit=500")
    assert page["next_cursor"] is None
    got = [(e["actor"], e["role"], e["ip"], e["action"], e["route"], e["reference"],
            e["outcome"], e["status"], e["code"]) for e in reversed(page["entries"])]
    ip = "127.0.0.1"
    assert got == [
        (ADMIN_ID, "admin", ip, "reserve_topup", "top_up", "t1", "applied", 200, None),
        (ADMIN_ID, "admin", ip, "reserve_topup_refused", "top_up", "", "refused", 400,
         "malformed_json"),
        (ADMIN_ID, "admin", ip, "reserve_topup_refused", "top_up", "t2", "refused", 400, None),
        (ADMIN_ID, "admin", ip, "reserve_topup_refused", "top_up", "", "refused", 400,
         "malformed_json"),
        (ADMIN_ID, "admin", ip, "reserve_withdrawal_refused", "withdraw", "w1", "refused", 409,
         "exceeds_available"),
        (SERVICE_ID, "service", ip, "reserve", "reserve", "h1", "applied", 200, None),
        (SERVICE_ID, "service", ip, "reserve_refused", "reserve", "h2", "refused", 409,
         "exceeds_available"),
        (SERVICE_ID, "service", ip, "commit_hold", "commit_hold", "h1", "applied", 200, None),
        (SERVICE_ID, "service", ip, "release_hold_refused", "release_hold", "nope", "refused",
         404, "hold_not_found"),
        (SERVICE_ID, "service", ip, "deposit", "deposit", "d1", "applied", 200, None),
        (SERVICE_ID, "service", ip, "deposit_refused", "deposit", "d2", "refused", 400, None),
        (SERVICE_ID, "service", ip, "reserve_topup_refused", "top_up", "t4", "refused", 403,
         "forbidden"),
        ("", "", ip, "reserve_refused", "reserve", "h3", "refused", 401, "unauthorized"),
        (ADMIN_ID, "admin", ip, "cache_clear", "cache_clear", "", "applied", 200, None),
    ]
    nan = page["entries"][-4]
    assert nan["error"] == "malformed JSON: NaN is not a number"
    assert nan["body"] == {}  # not JSON: nothing of it kept
    assert page["entries"][0]["result"] == {"applied": True}

    # filters and paging
    refused = await _audit(http, "?outcome=refused&actor=" + SERVICE_ID)
    assert [e["reference"] for e in refused["entries"]] == ["t4", "d2", "nope", "h2"]
    topups = await _audit(http, "?action=reserve_topup")
    assert len(topups["entries"]) == 5 and {e["route"] for e in topups["entries"]} == {"top_up"}
    assert [e["action"] for e in (await _audit(http, "?reference=h1"))["entries"]] == [
        "commit_hold", "reserve"]
    first = await _audit(http, "?limit=5")
    second = await _audit(http, f"?limit=5&before={first['next_cursor']}")
    assert [e["event_id"] for e in first["entries"] + second["entries"]] == [
        e["event_id"] for e in page["entries"][:10]]
    newest_ms = page["entries"][0]["created_ms"]
    assert (await _audit(http, f"?since_ms={newest_ms + 1}"))["entries"] == []
    assert len((await _audit(http, f"?until_ms={newest_ms + 1}"))["entries"]) == len(got)


@pytest.mark.parametrize("query", ["?limit=0", "?limit=501", "?outcome=maybe", "?before=0",
                                   "?since_ms=\u00b2", "?until_ms=253402300800000",
                                   "?actor=", "?actor=a%00b", "?action=" + "a" * 65])
async def test_audit_query_is_checked(http: httpx.AsyncClient, query: str) -> None:
    r = await http.get(f"/wallet/reserves/audit{query}", headers=ADMIN)
    assert (r.status_code, r.json()["code"]) == (400, "invalid_query_parameter"), r.text
    r = await http.get(f"/wallet/reserves/audit{query}", headers=SERVICE)
    assert r.status_code == 403


async def test_a_successful_reserve_carries_its_audit_in_its_own_event(
        http: httpx.AsyncClient) -> None:
    """No extra Redis call on the hot path: the one event the reserve journals says who."""
    await _top_up(http, "100", "seed")
    before = len(await _journal(http))
    r = await http.post(f"{ACCT}/reserve", headers=SERVICE,
                        json={"amount": "1", "reference_id": "hot", "operation_type": "swap"})
    assert r.status_code == 200, r.text
    new = (await _journal(http))[before:]
    assert [(e.op, e.reference) for e in new] == [("reserve_lock", "hot")]
    assert new[0].meta == {"actor": SERVICE_ID, "ip": "127.0.0.1", "action": "reserve",
                           "request": {"method": "POST", "path": f"{ACCT}/reserve",
                                       "route": "reserve", "role": "service"}}


async def test_refusals_without_a_token_are_audited_at_a_bounded_rate(
        http: httpx.AsyncClient) -> None:
    before = len(await _journal(http))
    for i in range(100):
        r = await http.post(f"{ACCT}/reserve", headers={"Authorization": f"Bearer wrong-{i}"},
                            json={"amount": "1", "reference_id": f"x{i}",
                                  "operation_type": "swap"})
        assert r.status_code == 401
    audits = (await _journal(http))[before:]
    # the burst, plus what the bucket refilled while the loop ran (1 a second)
    assert limits.unauthenticated_audit_burst <= len(audits) < 20
    assert {e.op for e in audits} == {"audit"}


def test_reserves_audit_prints_the_log_as_a_table(tmp_path: Path, capsys: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import fakeredis

    from engine.cli import main
    from engine.drivers import SyncDriver
    from engine.ops import Ops
    from engine.registry import CurrencyRegistry

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    settings = Settings()
    client = fakeredis.FakeRedis(decode_responses=True)
    ops = Ops(settings, CurrencyRegistry.load(settings.currencies_path))
    driver = SyncDriver(client)
    driver.run(ops.audit("flows", "flow_state", "", {"request": {"kind": "swap"}}))
    driver.run(ops.audit("ops-1", "token_create", "local", {"name": "n1"}))
    driver.run(ops.audit("ops-1", "reserve_topup_refused", "10.0.0.9", {
        "request": {"method": "POST", "path": "/x", "route": "top_up", "role": "admin"},
        "result": {"status": 409, "code": "reference_conflict", "error": "..."},
        "reference": "t9"}))
    events = [JournalEvent.parse(i, f) for i, f in client.xrange(ops.keys.stream(0))]
    store = Store(url)
    store.write_batch(events)
    store.close()
    monkeypatch.setenv("RESERVES_DATABASE_URL", url)
    assert main(["audit", "--outcome", "refused"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["event_id", "time", "actor", "role", "ip", "action", "route",
                                "reference", "outcome", "status", "code"]
    assert lines[1].split()[2:] == ["ops-1", "admin", "10.0.0.9", "reserve_topup_refused",
                                    "top_up", "t9", "refused", "409", "reference_conflict"]
    assert len(lines) == 2
    assert main(["audit", "--limit", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2] == f"(more: --before {events[2].event_id})"
    assert main(["audit", "--before", str(events[2].event_id)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2  # not the flows' record snapshot
    assert lines[1].split()[2:] == ["ops-1", "local", "token_create", "applied"]
    assert main(["audit", "--action", "flow_state"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[2:] == ["flows", "flow_state",
                                                                   "applied"]
