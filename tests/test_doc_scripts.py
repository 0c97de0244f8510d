"""The design document's test scripts (test_reserve_system.py, test_swap_and_mobile_money.py at
the project root) run as an operator runs them, against a served instance: on the real Redis
and Postgres with tokens made by `reserves token create`, and on the embedded default. Each
must pass every check, skip none, and leave every reserve as it found it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import services
from tests.api_server import Server, api_server

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("test_reserve_system.py", "test_swap_and_mobile_money.py")
SECRET = "doc-scripts-callback-secret"
REFUSED_PHONE = "+256799999999"
SCRIPT_TIMEOUT_S = 300


def create_token(env: dict[str, str], role: str, tmp_path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "token", "create", "--role", role, "--name",
         f"doc-{role}"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def reserves(server: Server, token: str) -> dict[str, tuple[Decimal, Decimal]]:
    """(total, locked) of every reserve."""
    r = httpx.get(server.url + "/wallet/reserves/status", timeout=10,
                  headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    body = json.loads(r.text, parse_float=Decimal)["reserves"]
    return {f"{code}/{kind}": (v["total_balance"], v["locked_balance"])
            for kind in ("crypto", "fiat") for code, v in body[kind].items()}


def seed(server: Server, token: str) -> None:
    """Balances and an open hold of someone else's, which the scripts must leave alone."""
    headers = {"Authorization": f"Bearer {token}"}
    for path, body in (
            ("/wallet/reserves/USDT/crypto/topup",
             {"amount": "5000", "source_reference": "seed_usdt"}),
            ("/wallet/reserves/UGX/fiat/topup",
             {"amount": "20000000", "source_reference": "seed_ugx"}),
            ("/wallet/reserves/USDT/crypto/reserve",
             {"amount": "1234.5", "reference_id": "seed_hold", "operation_type": "swap"})):
        r = httpx.post(server.url + path, json=body, headers=headers, timeout=10)
        assert r.status_code == 200, r.text


def run_script(name: str, server: Server, env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / name), "--url", server.url, *args],
                          env=env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)
    table = done.stdout + done.stderr
    assert done.returncode == 0, table[-6000:]
    assert " 0 failed, 0 skipped" in table, table[-6000:]
    return table


def script_env(admin: str, service: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESERVES_")}
    env.update({"RESERVES_ADMIN_TOKEN": admin, "RESERVES_SERVICE_TOKEN": service,
                "RESERVES_MOBILE_MONEY_SECRET": SECRET,
                "RESERVES_MOBILE_MONEY_REFUSE": REFUSED_PHONE})
    return env


def check_scripts(server: Server, admin: str, service: str) -> None:
    seed(server, admin)
    before = reserves(server, admin)
    env = script_env(admin, service)
    first = run_script(SCRIPTS[0], server, env, "--exercise-levels")
    assert "Insufficient reserve balance. Required:" in first  # the Error Handling section ran
    second = run_script(SCRIPTS[1], server, env)
    assert "signed success callback: completed" in second
    assert reserves(server, admin) == before
    hold = httpx.get(server.url + "/wallet/reserves/holds/seed_hold", timeout=10,
                     headers={"Authorization": f"Bearer {service}"})
    assert json.loads(hold.text)["hold"]["state"] == "pending"
    log = server.log()
    assert "Traceback" not in log, log[-4000:]


@pytest.fixture
def served(tmp_path: Path, redis_url: str, fresh_database_url: str) -> Iterator[
        tuple[Server, str, str]]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    env = {"RESERVES_REDIS_URL": redis_url, "RESERVES_DATABASE_URL": fresh_database_url,
           "RESERVES_KEY_PREFIX": prefix, "RESERVES_PERSIST_IN_PROCESS": "1",
           "RESERVES_ADMIN_TOKENS": "", "RESERVES_SERVICE_TOKENS": "",
           "RESERVES_MOBILE_MONEY_SECRET": SECRET,
           "RESERVES_MOBILE_MONEY_REFUSE": REFUSED_PHONE}
    cli_env = {**{k: v for k, v in os.environ.items() if not k.startswith("RESERVES_")}, **env}
    try:
        admin = create_token(cli_env, "admin", tmp_path)
        service = create_token(cli_env, "service", tmp_path)
        with api_server(tmp_path, env) as server:
            yield server, admin, service
    finally:
        services.delete_prefix_at(redis_url, prefix)


@pytest.mark.real
def test_doc_scripts_pass_on_real_redis_and_postgres(served: tuple[Server, str, str]) -> None:
    check_scripts(*served)


def test_doc_scripts_pass_on_the_embedded_default(tmp_path: Path) -> None:
    env: dict[str, Any] = {"RESERVES_MOBILE_MONEY_SECRET": SECRET,
                           "RESERVES_MOBILE_MONEY_REFUSE": REFUSED_PHONE}
    with api_server(tmp_path, env) as server:
        from tests.api_server import ADMIN_TOKEN, SERVICE_TOKEN

        check_scripts(server, ADMIN_TOKEN, SERVICE_TOKEN)


def test_a_failed_check_fails_the_script(tmp_path: Path) -> None:
    """The exit status follows the table: a wrong token fails the run."""
    env = {"RESERVES_MOBILE_MONEY_SECRET": SECRET}
    with api_server(tmp_path, env) as server:
        for name in SCRIPTS:
            done = subprocess.run(
                [sys.executable, str(ROOT / name), "--url", server.url, "--token", "wrong"],
                env=script_env("", ""), capture_output=True, text=True,
                timeout=SCRIPT_TIMEOUT_S)
            assert done.returncode == 1, done.stdout[-3000:]
            assert "FAIL" in done.stdout


def test_scripts_explain_themselves() -> None:
    for name in SCRIPTS:
        done = subprocess.run([sys.executable, str(ROOT / name), "--help"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0
        for option in ("--url", "--token", "--service-token"):
            assert option in done.stdout
        missing = subprocess.run([sys.executable, str(ROOT / name)], env=script_env("", ""),
                                 capture_output=True, text=True, timeout=60)
        assert missing.returncode == 2
        assert "an admin token is needed: --token or RESERVES_ADMIN_TOKEN" in missing.stderr
