"""Automated top-ups through the app (api.app.create_app, httpx's ASGI transport) on the real
Redis: the policies endpoint, a triggered request on the dashboard and in the alerts, the
signed callback over HTTP applied once, and a bad policies file refused at start."""

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
from engine.liquidity.manager import LiquidityManager
from engine.liquidity.policy import PolicyError
from engine.liquidity.provider import signed_callback
from engine.monitoring.config import MonitorConfig
from engine.monitoring.monitor import Monitor
from tests.api_server import ADMIN, ADMIN_TOKEN, SERVICE, SERVICE_TOKEN
from tests.engine_helpers import START_MS, Clock

SECRET = "liquidity-api-secret-0123456789"
USDT = "RESERVE_USDT_CRYPTO"
POLICIES = """
[[policy]]
currency = "USDT"
utilization_pct = 80
daily_cap = "5000"
window_s = 600
"""


def _app(backend: dict[str, Any], tmp_path: Path, clock: Clock) -> tuple[Any, ReserveEngine]:
    settings = replace(backend["settings"], admin_tokens=(ADMIN_TOKEN,),
                       service_tokens=(SERVICE_TOKEN,),
                       database_url=f"sqlite:///{tmp_path / 'reserves.db'}")
    engine = ReserveEngine(backend["async_factory"](), settings, clock_ms=clock)
    # No background tasks: the test runs the manager's passes itself, on its own clock.
    return create_app(settings, engine=engine, config=ApiConfig(background_tasks=False)), engine


@pytest.fixture
async def http(backend: dict[str, Any], tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    policies = tmp_path / "policies.toml"
    policies.write_text(POLICIES)
    monkeypatch.setenv("RESERVES_LIQUIDITY_POLICIES", str(policies))
    monkeypatch.setenv("RESERVES_LIQUIDITY_SECRET", SECRET)
    monkeypatch.delenv("RESERVES_LIQUIDITY_SIMULATE", raising=False)
    clock = Clock()
    app, engine = _app(backend, tmp_path, clock)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                client.app = app  # type: ignore[attr-defined]
                client.clock = clock  # type: ignore[attr-defined]
                yield client
    finally:
        await engine.close()


@pytest.mark.parametrize("backend", [pytest.param("redis", marks=pytest.mark.real)],
                         indirect=True)
async def test_a_request_from_trigger_to_top_up_through_the_api(
        http: httpx.AsyncClient) -> None:
    ctx = http.app.state.ctx  # type: ignore[attr-defined]
    clock: Clock = http.clock  # type: ignore[attr-defined]
    manager: LiquidityManager = ctx.extras["liquidity"]
    monitor = Monitor(ctx.engine, MonitorConfig(), interval_s=3600)

    assert (await http.get("/wallet/reserves/policies", headers=SERVICE)).status_code == 403
    assert (await http.get("/wallet/reserves/policies")).status_code == 401
    policies = (await http.get("/wallet/reserves/policies", headers=ADMIN)).json(
        parse_float=Decimal)
    assert policies["policies"] == [
        {"account": USDT, "currency": "USDT", "account_type": "crypto", "utilization_pct": 80,
         "seconds_to_empty_max": None, "amount": None, "daily_cap": Decimal("5000.0"),
         "window_s": 600}]
    assert policies["path"].endswith("policies.toml") and policies["requests"] == []

    top = await http.post("/wallet/reserves/USDT/crypto/topup", headers=ADMIN,
                          json={"amount": "1000", "source_reference": "seed"})
    assert top.status_code == 200
    lock = await http.post("/wallet/reserves/USDT/crypto/reserve", headers=SERVICE,
                           json={"amount": "850", "reference_id": "hold1",
                                 "operation_type": "swap"})
    assert lock.status_code == 200
    await manager.tick()
    reference = f"liquidity:{USDT}:{START_MS}"
    requests = (await http.get("/wallet/reserves/liquidity/requests", headers=ADMIN)).json(
        parse_float=Decimal)["requests"]
    assert [(r["reference_id"], r["state"], r["amount"], r["attempts"]) for r in requests] == [
        (reference, "pending", Decimal("700.0"), 1)]  # 850 / 1700 is 50 %
    dashboard = (await http.get("/wallet/reserves/dashboard", headers=ADMIN)).json()
    assert [r["reference_id"] for r in dashboard["liquidity_requests"]] == [reference]
    await monitor.check_once()  # the monitor's pass leaves the liquidity alert open
    alerts = (await http.get("/wallet/reserves/alerts", headers=ADMIN)).json()["alerts"]
    assert sorted((a["key"], a["level"]) for a in alerts) == [
        (f"{USDT}:liquidity|liquidity_request", "warning"),
        (f"{USDT}|utilization", "warning")]

    tx_id = requests[0]["provider_tx_id"]
    body, headers = signed_callback(SECRET.encode(), tx_id, reference, "success",
                                    clock() // 1000)
    bad = await http.post("/wallet/reserves/liquidity/callback", content=body,
                          headers={**headers, "X-Signature": "f" * 64})
    assert bad.status_code == 401
    assert bad.json() == {"success": False, "error": "Invalid callback signature",
                          "code": "bad_signature"}
    assert "www-authenticate" not in bad.headers
    for duplicate in (False, True, True):
        answer = await http.post("/wallet/reserves/liquidity/callback", content=body,
                                 headers=headers)
        assert answer.status_code == 200, answer.text
        data = answer.json(parse_float=Decimal)
        assert data["duplicate_callback"] is duplicate
        assert data["request"]["state"] == "completed"
    balance = (await http.get("/wallet/reserves/USDT/crypto/balance", headers=ADMIN)).json(
        parse_float=Decimal)["reserve"]
    assert (balance["total_balance"], balance["locked_balance"]) == (Decimal("1700.0"),
                                                                     Decimal("850.0"))
    alerts = (await http.get("/wallet/reserves/alerts", headers=ADMIN)).json()
    assert [a["key"] for a in alerts["alerts"]] == [f"{USDT}|utilization"]
    assert [(h["key"], h["state"]) for h in alerts["history"]][:2] == [
        (f"{USDT}:liquidity|liquidity_request", "cleared"), (f"{USDT}|utilization", "open")]
    not_flagged = await http.post(f"/wallet/reserves/liquidity/requests/{reference}/dismiss",
                                  headers=ADMIN)
    assert not_flagged.status_code == 409
    assert not_flagged.json() == {
        "success": False, "error": f"Liquidity request {reference} is completed, not flagged",
        "code": "liquidity_request_not_flagged"}
    unknown = signed_callback(SECRET.encode(), tx_id, "liquidity:nope", "success",
                              clock() // 1000)
    missing = await http.post("/wallet/reserves/liquidity/callback", content=unknown[0],
                              headers=unknown[1])
    assert missing.status_code == 404
    assert missing.json()["code"] == "liquidity_request_not_found"


@pytest.mark.parametrize("backend", ["fakeredis"], indirect=True)
async def test_a_bad_policies_file_stops_the_start(backend: dict[str, Any], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    policies = tmp_path / "policies.toml"
    policies.write_text(POLICIES.replace("80", "800"))
    monkeypatch.setenv("RESERVES_LIQUIDITY_POLICIES", str(policies))
    app, engine = _app(backend, tmp_path, Clock())
    with pytest.raises(PolicyError) as raised:
        async with app.router.lifespan_context(app):
            pass
    await engine.close()
    assert str(raised.value) == (f"liquidity policies {policies}: policy[0].utilization_pct: "
                                 "must be a whole number from 1 to 100, got 800")


def test_serve_refuses_a_bad_policies_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    policies = tmp_path / "policies.toml"
    policies.write_text(POLICIES.replace('daily_cap = "5000"', 'daily_cap = "-1"'))
    monkeypatch.setenv("RESERVES_LIQUIDITY_POLICIES", str(policies))
    monkeypatch.setenv("RESERVES_DATABASE_URL", f"sqlite:///{tmp_path / 'reserves.db'}")
    monkeypatch.delenv("RESERVES_REDIS_URL", raising=False)
    assert main(["serve", "--port", "1"]) == 2
    assert capsys.readouterr().err == (
        f"reserves serve: liquidity policies {policies}: policy[0].daily_cap: daily_cap must be "
        "greater than zero\n")
    assert not (tmp_path / "reserves.db").exists()  # refused before anything was set up
