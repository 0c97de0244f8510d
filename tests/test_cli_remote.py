"""The CLI next to the embedded default: `reserves balances` and `reserves token ...` refuse
to read their own empty store and, with --url/--token, use a running `reserves serve` over HTTP;
the token endpoints they call (POST/GET /wallet/reserves/tokens, .../revoke) through the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.auth import digest_of
from api.context import ApiConfig
from engine.cli import main
from engine.engine import ReserveEngine
from engine.journal import JournalEvent
from engine.service import ReserveService
from tests.api_server import ADMIN, ADMIN_TOKEN, SERVICE, SERVICE_TOKEN, api_server

REFUSAL = ("no RESERVES_REDIS_URL: the embedded store lives inside the `reserves serve` "
           "process; pass --url/--token to {} over HTTP\n")
HEADER = f"{'reserve':<22} {'total':>22} {'available':>22} {'locked':>22} {'util%':>7}  status"


@pytest.fixture
def embedded_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("RESERVES_REDIS_URL", "RESERVES_ADMIN_TOKEN", "RESERVES_KEY_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RESERVES_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")


@pytest.mark.usefixtures("embedded_env")
@pytest.mark.parametrize(("argv", "what"), [
    (["balances"], "read it"),
    (["token", "create", "--role", "service"], "create it"),
    (["token", "list"], "list them"),
    (["token", "revoke", "desk"], "revoke it"),
])
def test_embedded_without_url_refuses_clearly(argv: list[str], what: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    out = capsys.readouterr()
    command = "reserves balances" if argv[0] == "balances" else f"reserves token {argv[1]}"
    assert out.err == f"{command}: {REFUSAL.format(what)}"
    assert out.out == ""  # no table of zeros that looks like an answer


@pytest.mark.usefixtures("embedded_env")
def test_balances_and_tokens_of_a_running_embedded_server(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with api_server(tmp_path) as server:  # no RESERVES_REDIS_URL: the embedded default
        top = httpx.post(server.url + "/wallet/reserves/USDT/crypto/topup", headers=ADMIN,
                         json={"amount": "1234.5", "source_reference": "cli-1"}, timeout=10)
        assert top.status_code == 200, top.text
        lock = httpx.post(server.url + "/wallet/reserves/USDT/crypto/reserve", headers=SERVICE,
                          json={"amount": "234.5", "reference_id": "cli-h",
                                "operation_type": "swap"}, timeout=10)
        assert lock.status_code == 200, lock.text

        assert main(["balances", "--url", server.url, "--token", ADMIN_TOKEN]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == HEADER
        usdt = next(line for line in lines if line.startswith("RESERVE_USDT_CRYPTO"))
        assert usdt.split() == ["RESERVE_USDT_CRYPTO", "1234.5", "1000.0", "234.5", "19.0",
                                "healthy"]
        assert len(lines) == 10  # the header and the registry's 9 reserves

        assert main(["balances", "--url", server.url, "--token", "wrong"]) == 1
        assert capsys.readouterr().err == (
            f"reserves balances: {server.url}/wallet/reserves/status answered 401: "
            "invalid token\n")

        assert main(["token", "create", "--role", "service", "--name", "desk-1", "--url",
                     server.url, "--token", ADMIN_TOKEN]) == 0
        out = capsys.readouterr()
        token = out.out.strip()
        assert token.startswith("rsv_")
        assert out.err == (f"created service token 'desk-1' at {server.url}; it is shown only "
                           "this once\n")
        held = httpx.post(server.url + "/wallet/reserves/USDT/crypto/reserve",
                          headers={"Authorization": f"Bearer {token}"},
                          json={"amount": "1", "reference_id": "cli-h2",
                                "operation_type": "swap"}, timeout=10)
        assert held.status_code == 200, held.text
        admin_only = httpx.get(server.url + "/wallet/reserves/status",
                               headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert admin_only.status_code == 403

        assert main(["token", "list", "--url", server.url, "--token", ADMIN_TOKEN]) == 0
        listing = capsys.readouterr().out
        assert "desk-1" in listing and "service" in listing and token not in listing
        assert main(["token", "revoke", "desk-1", "--url", server.url,
                     "--token", ADMIN_TOKEN]) == 0
        assert capsys.readouterr().out == "revoked 1 token(s) named 'desk-1'\n"
        assert main(["token", "list", "--url", server.url, "--token", ADMIN_TOKEN]) == 0
        assert "desk-1" not in capsys.readouterr().out
    assert token not in server.log()


@pytest.mark.parametrize("backend", [pytest.param("redis", marks=pytest.mark.real)],
                         indirect=True)
def test_balances_with_a_redis_url_reads_it_directly(
        backend: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = backend["settings"]
    ReserveService(backend["sync"], settings).top_up_reserve("KES", "12.34", "fiat", "k1")
    monkeypatch.setenv("RESERVES_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("RESERVES_KEY_PREFIX", settings.key_prefix)
    assert main(["balances"]) == 0
    kes = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("RESERVE_KES_FIAT"))
    assert kes.split()[1:4] == ["12.34", "12.34", "0.0"]


# -- the token endpoints through the app ---------------------------------------------------------


@pytest.fixture
async def http(backend: dict[str, Any], tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = replace(backend["settings"], admin_tokens=(ADMIN_TOKEN,),
                       service_tokens=(SERVICE_TOKEN,),
                       database_url=f"sqlite:///{tmp_path / 'reserves.db'}")
    engine = ReserveEngine(backend["async_factory"](), settings)
    app = create_app(settings, engine=engine, config=ApiConfig(background_tasks=False))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                client.app = app  # type: ignore[attr-defined]
                yield client
    finally:
        await engine.close()


async def _journal(http: httpx.AsyncClient) -> list[JournalEvent]:
    ctx = http.app.state.ctx  # type: ignore[attr-defined]
    entries = await ctx.engine.client.xrange(ctx.engine.ops.keys.stream(0))
    return [JournalEvent.parse(i, f) for i, f in entries]


async def test_token_endpoints_create_list_revoke_and_audit(http: httpx.AsyncClient) -> None:
    assert (await http.post("/wallet/reserves/tokens", headers=SERVICE,
                            json={"role": "service"})).status_code == 403
    for body, code, message in [
        ({"role": "root"}, "invalid_role", "role must be admin or service"),
        ({}, "invalid_role", "role must be admin or service"),
        ({"role": "service", "name": "has space"}, "invalid_token_name",
         "name must be 1-64 characters of letters, digits and _ . : @ -"),
    ]:
        refused = await http.post("/wallet/reserves/tokens", headers=ADMIN, json=body)
        assert refused.status_code == 400
        assert refused.json() == {"success": False, "error": message, "code": code}
    assert (await http.get("/wallet/reserves/tokens", headers=ADMIN)).json() == {
        "success": True, "tokens": []}  # a refusal stored nothing

    made = (await http.post("/wallet/reserves/tokens", headers=ADMIN,
                            json={"role": "service", "name": "wallet-backend"})).json()
    token = made["token"]
    assert (made["name"], made["role"]) == ("wallet-backend", "service")
    auth = {"Authorization": f"Bearer {token}"}
    checked = await http.post("/wallet/reserves/USDT/crypto/check", headers=auth,
                              json={"amount": "1"})
    assert checked.status_code == 200
    listed = (await http.get("/wallet/reserves/tokens", headers=ADMIN)).json()["tokens"]
    assert [(t["name"], t["role"], t["digest"]) for t in listed] == [
        ("wallet-backend", "service", digest_of(token)[:12])]

    revoked = await http.post("/wallet/reserves/tokens/wallet-backend/revoke", headers=ADMIN)
    assert revoked.json() == {"success": True, "name": "wallet-backend", "revoked": 1}
    again = await http.post("/wallet/reserves/tokens/wallet-backend/revoke", headers=ADMIN)
    assert again.status_code == 404
    assert again.json() == {"success": False, "error": "No stored token is named wallet-backend",
                            "code": "token_not_found"}
    audits = [(e.reference, e.meta.get("result")) for e in await _journal(http)
              if e.op == "audit"]
    # every refusal is audited too (api/endpoint.py), under the endpoint's action
    assert audits == [
        ("token_create_refused", {"status": 403, "code": "forbidden",
                                  "error": "this endpoint needs the admin role"}),
        *[("token_create_refused", {"status": 400, "code": code, "error": message})
          for code, message in [
              ("invalid_role", "role must be admin or service"),
              ("invalid_role", "role must be admin or service"),
              ("invalid_token_name",
               "name must be 1-64 characters of letters, digits and _ . : @ -")]],
        ("token_create", {"name": "wallet-backend", "role": "service"}),
        ("token_revoke", {"name": "wallet-backend", "revoked": 1}),
        ("token_revoke_refused", {"status": 404, "code": "token_not_found",
                                  "error": "No stored token is named wallet-backend"})]
    raw = "".join(str(e.meta) for e in await _journal(http))
    assert token not in raw and digest_of(token) not in raw
    # no money moved: the only other event is the account the check opened
    assert [e.op for e in await _journal(http) if e.op != "audit"] == ["account_open"]
