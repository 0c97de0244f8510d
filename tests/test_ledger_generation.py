"""Redis losing its data never diverges the ledger silently (issue 15, item 6).

Before: after a restart without AOF the API reopened the accounts at zero, event ids restarted
at 1, the persister dropped the new events as duplicates of persisted ids (three top-ups
answered 200 never reached Postgres) and `rebuild` then refused. Now: writes answer 503
ledger_not_loaded (and /health says so) until `reserves rebuild`, whose event ids never repeat
the lost generation's, and the persister stops on an id the ledger holds with other content.
Each test runs its own redis-server (never the shared one) or its own key prefix."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api.app import _monitor_snapshot, _refresh_lag, create_app
from api.context import ApiConfig
from engine.config import Settings
from engine.engine import ReserveEngine
from engine.errors import LedgerNotLoaded
from engine.keys import KeySpace
from engine.monitoring.alerts import system_alerts
from engine.service import ReserveService
from persistence import limits
from persistence.errors import LedgerDiverged
from persistence.generation import initialise_if_new, is_loaded
from persistence.migrate import ensure_schema
from persistence.rebuild import rebuild
from persistence.reconcile import reconcile
from persistence.store import Store
from persistence.worker import Persister
from tests.api_server import ADMIN, ADMIN_TOKEN, SERVICE, SERVICE_TOKEN
from tests.services import free_port, redis_server


class OwnRedis:
    """A throwaway redis-server (without AOF) this test may restart empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._server: Any = None

    def start(self) -> None:
        self._server = redis_server(port=self.port)
        self._server.__enter__()

    def stop(self) -> None:
        if self._server is not None:
            self._server.__exit__(None, None, None)
            self._server = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _app(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, ReserveEngine]]:
    engine = ReserveEngine.from_settings(settings)
    app = create_app(settings, engine=engine, config=ApiConfig(background_tasks=False))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                yield http, engine
    finally:
        await engine.close()


async def _post(http: httpx.AsyncClient, path: str, headers: dict[str, str],
                body: dict[str, Any]) -> httpx.Response:
    """POST, again while the answer is redis_unavailable: after a restart each pooled connection
    the restart broke fails once (the README says so)."""
    for _ in range(20):
        response = await http.post(path, headers=headers, json=body)
        if response.status_code != 503 or response.json()["code"] != "redis_unavailable":
            break
    return response


async def _top_up(http: httpx.AsyncClient, amount: str, reference: str) -> httpx.Response:
    return await _post(http, "/wallet/reserves/USDT/crypto/topup", ADMIN,
                       {"amount": amount, "source_reference": reference})


def _drain(client: Any, settings: Settings) -> None:
    persister = Persister(client, settings, settings.database_url, "p1")
    try:
        persister.drain(timeout_s=30)
    finally:
        persister.close()


def _ledger_rows(database_url: str) -> list[tuple[Any, ...]]:
    store = Store(database_url)
    try:
        return [tuple(r) for r in store.transaction_rows()]
    finally:
        store.close()


@pytest.mark.parametrize("loss", ["flushall", "restart"])
async def test_redis_loss_is_refused_until_rebuild(own_redis: OwnRedis, fresh_database_url: str,
                                                   loss: str) -> None:
    settings = replace(Settings(), redis_url=own_redis.url, database_url=fresh_database_url,
                       key_prefix="gen", ledger_guard=True, admin_tokens=(ADMIN_TOKEN,),
                       service_tokens=(SERVICE_TOKEN,))
    ensure_schema(fresh_database_url)
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    async for http, engine in _app(settings):
        # a brand-new deployment (empty ledger) initialises its marker itself
        assert (await http.get("/health")).json() == {"status": "ok"}
        for i in range(3):
            assert (await _top_up(http, "10", f"t{i}")).status_code == 200
        held = await http.post("/wallet/reserves/USDT/crypto/reserve", headers=SERVICE,
                               json={"amount": "4", "reference_id": "h1",
                                     "operation_type": "swap"})
        assert held.status_code == 200, held.text
        _drain(client, settings)
        persisted = _ledger_rows(fresh_database_url)
        max_id = max(r[0] for r in persisted)

        # Redis loses everything; this process keeps its warm caches
        if loss == "flushall":
            client.flushall()
        else:  # a restart without AOF
            own_redis.stop()
            own_redis.start()
        response = await _top_up(http, "10", "t3")
        assert response.status_code == 503
        assert response.json()["code"] == "ledger_not_loaded"
        for path, body, headers in (
            ("/wallet/reserves/USDT/crypto/reserve",
             {"amount": "1", "reference_id": "h2", "operation_type": "swap"}, SERVICE),
            ("/wallet/reserves/holds/h1/commit", {}, SERVICE),
            ("/wallet/reserves/USDT/crypto/withdraw",
             {"amount": "1", "destination_reference": "w1"}, ADMIN),
        ):
            refused = await _post(http, path, headers, body)
            assert (refused.status_code, refused.json()["code"]) == (503, "ledger_not_loaded")
        status = await http.get("/wallet/reserves/USDT/crypto/balance", headers=ADMIN)
        assert (status.status_code, status.json()["code"]) == (503, "ledger_not_loaded")
        with pytest.raises(LedgerNotLoaded):  # never shown as zero (the dashboard's read)
            await engine.all_reserve_balances()
        assert client.dbsize() == 0  # nothing reopened at zero, no counter restarted
        health = await http.get("/health")
        assert health.status_code == 503
        assert health.json()["code"] == "ledger_not_loaded"
        # a process starting now finds the ledger's history and leaves Redis alone
        assert initialise_if_new(client, settings) is False
        assert client.dbsize() == 0

        report = rebuild(client, settings, fresh_database_url)
        assert (report.accounts_count, report.pending_holds_count) == (1, 1)
        assert is_loaded(client, settings)
        assert (await http.get("/health")).json() == {"status": "ok"}
        after = await _top_up(http, "10", "t3")
        assert after.status_code == 200, after.text
        assert after.json()["transaction_id"] == max_id + limits.rebuild_id_gap_count + 1
        repeat = await _top_up(http, "10", "t0")  # made before the loss: still a repeat
        assert repeat.status_code == 200
        committed = await _post(http, "/wallet/reserves/holds/h1/commit", SERVICE, {})
        assert committed.status_code == 200, committed.text

        _drain(client, settings)
        assert reconcile(client, settings, fresh_database_url) == []
        rows = _ledger_rows(fresh_database_url)
        assert rows[:len(persisted)] == persisted
        assert [r[2] for r in rows[len(persisted):]] == ["reserve_topup", "reserve_commit"]
        balance = await engine.get_reserve_balance("USDT", "crypto")
        assert (balance.total_minor, balance.locked_minor) == (36_000_000, 0)  # 4 top-ups of 10, 4 committed
    client.close()


@pytest.mark.parametrize("backend", ["redis"], indirect=True)  # the persister's real Redis
@pytest.mark.parametrize("database", ["postgres", "sqlite"])
def test_persister_stops_on_an_id_the_ledger_holds_with_other_content(
        backend: dict[str, Any], database: str, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    if database == "postgres":
        fresh_database_url = request.getfixturevalue("fresh_database_url")
    else:
        fresh_database_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings = replace(backend["settings"], database_url=fresh_database_url)
    ensure_schema(fresh_database_url)
    client = backend["sync"]
    service = ReserveService(client, settings)
    service.top_up_reserve("USDT", "10", "crypto", "t0")
    _drain(client, settings)
    persisted = _ledger_rows(fresh_database_url)
    stream = service.ops.keys.stream(0)
    (_, top_up), = [e for e in client.xrange(stream) if e[1]["op"] == "reserve_topup"]

    # the same event again (a replay): a duplicate, written once, acknowledged
    client.xadd(stream, top_up)
    _drain(client, settings)
    assert _ledger_rows(fresh_database_url) == persisted

    # another event under the same id (Redis handed the id out again): a divergence
    planted = {**top_up, "amt": "99000000", "dt": "99000000", "total": "99000000"}
    entry_id = client.xadd(stream, planted)
    persister = Persister(client, settings, fresh_database_url, "p1")
    try:
        with pytest.raises(LedgerDiverged, match=f"event {top_up['id']} is in the ledger "
                                                 "with other content"):
            persister.drain(timeout_s=30)
    finally:
        persister.close()
    assert persister.divergence is not None
    assert _ledger_rows(fresh_database_url) == persisted
    pending = client.xpending_range(stream, "persister", min="-", max="+", count=10)
    assert [p["message_id"] for p in pending] == [entry_id]  # kept, not acknowledged
    assert client.xrange(stream, min=entry_id, max=entry_id)[0][1] == planted
    assert f"event {top_up['id']}" in client.get(service.ops.keys.divergence())

    # what an operator sees: /health, /metrics and a critical system alert
    async def seen() -> None:
        engine = ReserveEngine(backend["async_factory"](), settings)
        app = create_app(settings, engine=engine, config=ApiConfig(background_tasks=False))
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                    health = await http.get("/health")
                    assert health.status_code == 503
                    assert health.json()["code"] == "ledger_diverged"
                    assert f"event {top_up['id']}" in health.json()["error"]
                    metrics = (await http.get("/metrics")).text
                    assert 'reserves_ledger_problem{code="ledger_diverged"} 1.0' in metrics
                    ctx = app.state.ctx
                    await _refresh_lag(ctx)
                    wanted, _ = system_alerts(_monitor_snapshot(ctx), {})
                    assert ("ledger_diverged", "critical") in [(w.kind, w.level) for w in wanted]
        finally:
            await engine.close()

    asyncio.run(seen())
    client.delete(service.ops.keys.divergence())


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_the_start_check_goes_shard_by_shard(backend: dict[str, Any],
                                             fresh_database_url: str) -> None:
    """Several shards: a deployment from before the marker is adopted (its counters say Redis
    has its state); after a loss, a shard the ledger has events of stays refused while shards
    it never used start at 0; rebuild loads the rest."""
    settings = replace(backend["settings"], database_url=fresh_database_url, shard_count=4,
                       ledger_guard=True)
    ensure_schema(fresh_database_url)
    client, keys = backend["sync"], KeySpace(settings.key_prefix, 4)
    assert initialise_if_new(client, settings) is True  # new: every shard starts at 0
    assert is_loaded(client, settings)
    service = ReserveService(client, settings)
    service.top_up_reserve("USDT", "10", "crypto", "t0")
    used = keys.account("RESERVE_USDT_CRYPTO").shard
    _drain(client, settings)

    client.delete(keys.generation())  # as before the marker existed
    assert initialise_if_new(client, settings) is True
    assert is_loaded(client, settings)

    for key in list(client.scan_iter(match=f"{settings.key_prefix}:*")):
        client.delete(key)  # Redis lost everything
    assert initialise_if_new(client, settings) is False
    assert [client.get(keys.seq(s)) for s in range(4)] == [
        None if s == used else "0" for s in range(4)]
    assert not is_loaded(client, settings)
    with pytest.raises(LedgerNotLoaded):
        ReserveService(client, settings).top_up_reserve("USDT", "10", "crypto", "t1")
    rebuild(client, settings, fresh_database_url)
    assert is_loaded(client, settings)
    assert ReserveService(client, settings).top_up_reserve(
        "USDT", "10", "crypto", "t1")["new_total_balance"] == 20
