"""The dashboard's page, static assets and admin endpoints, through the real app
(api.app.create_app) with httpx's ASGI transport, on fakeredis and on the real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.context import ApiConfig
from engine.engine import ReserveEngine
from engine.journal import JournalEvent
from engine.monitoring.config import MonitorConfig
from engine.monitoring.monitor import Monitor
from persistence.migrate import upgrade
from persistence.store import Store
from tests.api_server import ADMIN, ADMIN_TOKEN, SERVICE, SERVICE_TOKEN

DATA_PATHS = ["/wallet/reserves/dashboard", "/wallet/reserves/alerts", "/wallet/reserves/recent"]


@pytest.fixture
async def http(backend: dict[str, Any], tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = replace(backend["settings"], admin_tokens=(ADMIN_TOKEN,),
                       service_tokens=(SERVICE_TOKEN,),
                       database_url=f"sqlite:///{tmp_path / 'reserves.db'}")
    engine = ReserveEngine(backend["async_factory"](), settings)
    # No background tasks: the tests run the monitor's checks themselves (no timing).
    app = create_app(settings, engine=engine, config=ApiConfig(background_tasks=False))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                client.app = app  # type: ignore[attr-defined]
                yield client
    finally:
        await engine.close()


def _ctx(http: httpx.AsyncClient) -> Any:
    return http.app.state.ctx  # type: ignore[attr-defined]


def _monitor(http: httpx.AsyncClient) -> Monitor:
    ctx = _ctx(http)
    ctx.monitor = Monitor(ctx.engine, MonitorConfig(floors_minor={"USDT": 100_000_000}),
                          interval_s=3600)
    return ctx.monitor  # type: ignore[no-any-return]


async def _top_up(http: httpx.AsyncClient, currency: str, account_type: str, amount: str,
                  reference: str) -> None:
    response = await http.post(f"/wallet/reserves/{currency}/{account_type}/topup", headers=ADMIN,
                               json={"amount": amount, "source_reference": reference})
    assert response.status_code == 200, response.text


async def _lock(http: httpx.AsyncClient, currency: str, account_type: str, amount: str,
                reference: str) -> None:
    response = await http.post(f"/wallet/reserves/{currency}/{account_type}/reserve",
                               headers=SERVICE, json={"amount": amount, "reference_id": reference,
                                                      "operation_type": "swap"})
    assert response.status_code == 200, response.text


async def test_page_and_assets_are_public(http: httpx.AsyncClient) -> None:
    page = await http.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/dashboard/static/dashboard/app.js">' in page.text
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = await http.get(f"/dashboard/static/dashboard/{asset}")
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
    js = (await http.get("/dashboard/static/dashboard/app.js")).text
    assert "sessionStorage" in js and "Bearer " in js
    assert "http://" not in js and "https://" not in js  # no CDN
    assert (await http.get("/dashboard/static/dashboard/missing.js")).status_code == 404


@pytest.mark.parametrize("path", DATA_PATHS)
async def test_data_needs_the_admin_role(http: httpx.AsyncClient, path: str) -> None:
    missing = await http.get(path)
    assert missing.status_code == 401
    assert missing.json() == {"success": False, "error": "missing bearer token",
                              "code": "unauthorized"}
    bad = await http.get(path, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert bad.json()["error"] == "invalid token"
    service = await http.get(path, headers=SERVICE)
    assert service.status_code == 403
    assert service.json()["error"] == "this endpoint needs the admin role"
    assert (await http.get(path, headers=ADMIN)).status_code == 200


async def test_dashboard_data_alerts_and_recent(http: httpx.AsyncClient) -> None:
    monitor = _monitor(http)
    await _ctx(http).engine.all_reserve_balances()  # opens every reserve: no account_open later
    await _top_up(http, "USDT", "crypto", "1000", "t1")
    await _lock(http, "USDT", "crypto", "910.5", "r1")
    await monitor.check_once()
    data = (await http.get("/wallet/reserves/dashboard", headers=ADMIN)).json(parse_float=Decimal)
    by_label = {r["label"]: r for r in data["reserves"]}
    assert len(by_label) == 9  # every reserve of the registry, opened on first look
    usdt = by_label["RESERVE_USDT_CRYPTO"]
    assert by_label["RESERVE_BTC_CRYPTO"]["total_balance"] == 0
    assert usdt["total_balance"] == Decimal("1000.0")
    assert usdt["locked_balance"] == Decimal("910.5")
    assert usdt["available_balance"] == Decimal("89.5")
    assert usdt["status"] == "critical"
    assert usdt["forecast"]["suggested_top_up"] == Decimal("821")  # 910.5 / 1821 = 50 %
    assert len(usdt["history"]) == 1 and usdt["history"][0][1] == Decimal("91.05")
    # in the order raised: utilization, then the floor
    assert [(a["key"], a["level"]) for a in data["alerts"]] == [
        ("RESERVE_USDT_CRYPTO|utilization", "critical"), ("RESERVE_USDT_CRYPTO|floor", "critical")]
    floor = next(a for a in data["alerts"] if a["kind"] == "floor")
    assert floor["message"] == "USDT reserve available balance 89.5 is below the floor 100.0"
    assert floor["state"] == "open" and floor["cleared_ms"] is None
    assert isinstance(floor["id"], int) and isinstance(floor["raised_ms"], int)

    alerts = (await http.get("/wallet/reserves/alerts", headers=ADMIN)).json()
    assert sorted(a["kind"] for a in alerts["alerts"]) == ["floor", "utilization"]
    assert [h["state"] for h in alerts["history"]] == ["open", "open"]

    recent = (await http.get("/wallet/reserves/recent?limit=3", headers=ADMIN)).json(
        parse_float=Decimal)
    # newest first: the two alerts, the lock
    assert [(t["operation"], t["reference"]) for t in recent["transactions"]] == [
        ("alert_raised", "RESERVE_USDT_CRYPTO|floor"),
        ("alert_raised", "RESERVE_USDT_CRYPTO|utilization"), ("reserve_lock", "r1")]
    assert recent["transactions"][0]["amount"] is None
    assert recent["transactions"][2]["amount"] == Decimal("910.5")
    assert recent["transactions"][2]["account"] == "RESERVE_USDT_CRYPTO"


async def test_cleared_alerts_move_to_the_history(http: httpx.AsyncClient) -> None:
    monitor = _monitor(http)
    await _top_up(http, "USDT", "crypto", "1000", "t1")
    await _lock(http, "USDT", "crypto", "950", "r1")  # emergency, 50 available < floor 100
    await monitor.check_once()
    await _top_up(http, "USDT", "crypto", "1000", "t2")  # 47.5 %, 1050 available: both clear
    await monitor.check_once()
    body = (await http.get("/wallet/reserves/alerts?limit=3", headers=ADMIN)).json()
    assert body["alerts"] == []
    assert [h["state"] for h in body["history"]] == ["cleared", "cleared", "open"]
    assert all(isinstance(h["cleared_ms"], int) for h in body["history"][:2])


async def test_without_a_monitor_the_shared_books_are_read(http: httpx.AsyncClient) -> None:
    """Another process's monitor raised the alert: this one (no monitor) still shows it."""
    ctx = _ctx(http)
    other = Monitor(ctx.engine, MonitorConfig(), interval_s=3600)
    await _top_up(http, "UGX", "fiat", "1000", "t1")
    await _lock(http, "UGX", "fiat", "760", "r1")
    await other.check_once()
    assert ctx.monitor is None
    data = (await http.get("/wallet/reserves/dashboard", headers=ADMIN)).json(parse_float=Decimal)
    assert [(a["account"], a["level"]) for a in data["alerts"]] == [("RESERVE_UGX_FIAT", "warning")]
    ugx = next(r for r in data["reserves"] if r["label"] == "RESERVE_UGX_FIAT")
    assert ugx["status"] == "warning"
    assert ugx["history"] == [[ugx["history"][0][0], Decimal("76.0")]]
    assert ugx["forecast"]["suggested_top_up"] == Decimal("520")


async def test_recent_merges_the_ledger_with_the_unpersisted_tail(
        http: httpx.AsyncClient) -> None:
    """The persister trims what it wrote: those events come from the database."""
    ctx = _ctx(http)
    await _top_up(http, "KES", "fiat", "500", "t1")
    await _lock(http, "KES", "fiat", "120.25", "r1")
    url = ctx.settings.database_url
    upgrade(url)
    (stream,) = ctx.engine.ops.keys.streams()
    written = [JournalEvent.parse(i, f) for i, f in await ctx.engine.client.xrange(stream)]
    Store(url).write_batch(written)
    await ctx.engine.client.xtrim(stream, maxlen=0, approximate=False)
    await _lock(http, "KES", "fiat", "30", "r2")  # only in the stream
    body = (await http.get("/wallet/reserves/recent", headers=ADMIN)).json(parse_float=Decimal)
    assert [(t["operation"], t["reference"], t["amount"]) for t in body["transactions"]] == [
        ("reserve_lock", "r2", Decimal("30")), ("reserve_lock", "r1", Decimal("120.25")),
        ("reserve_topup", "t1", Decimal("500")), ("account_open", "", Decimal("0"))]
    assert [t["transaction_id"] for t in body["transactions"][1:]] == [
        e.event_id for e in reversed(written)]
    assert body["transactions"][1]["ts_ms"] == written[-1].ts_ms  # exact through the database


@pytest.mark.parametrize("path", ["/wallet/reserves/recent", "/wallet/reserves/alerts"])
async def test_limit_is_checked(http: httpx.AsyncClient, path: str) -> None:
    for bad in ("0", "abc", "-1", "201"):
        response = await http.get(f"{path}?limit={bad}", headers=ADMIN)
        assert response.status_code == 400
        assert response.json()["error"] == "limit must be a whole number from 1 to 200"


async def test_openapi_describes_the_dashboard_endpoints(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    for path in DATA_PATHS:
        get = spec["paths"][path]["get"]
        assert get["security"] == [{"bearer": []}]
        assert {"200", "401", "403", "429"} <= set(get["responses"])
    alerts = spec["paths"]["/wallet/reserves/alerts"]["get"]
    assert alerts["parameters"][0]["schema"]["maximum"] == 200
    assert "/dashboard" not in spec["paths"]  # the page is HTML, not API
