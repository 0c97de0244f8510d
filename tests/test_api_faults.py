"""The HTTP API under faults, each on its own throwaway redis-server (AOF, appendfsync always)
and its own Postgres database, with `reserves serve` persisting in-process:

- Redis stopped: the API answers 503 quickly, applies nothing, and recovers when Redis is back;
- Redis killed with SIGKILL under concurrent load and restarted on its AOF: every answered
  request holds, the unanswered ones are retried with the same references, and the balances
  come out exact;
- clients that send half a body or drop the connection before the answer: nothing is applied
  wrongly and the server keeps serving.

After each the journal is drained to Postgres and reconcile reports zero differences.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from engine import limits as engine_limits
from engine.config import Settings
from engine.connection import sync_client
from persistence.reconcile import reconcile
from persistence.store import close_shared_engines
from persistence.worker import Persister
from tests import services
from tests.api_server import ADMIN, ADMIN_TOKEN, SERVICE, SERVICE_TOKEN, Server, api_server
from tests.reliability import record
from tests.services import free_port, redis_server

pytestmark = pytest.mark.real

AOF_ALWAYS = ("--appendonly", "yes", "--appendfsync", "always")
UNAVAILABLE_ANSWER_S_MAX = 2.0  # Redis down: the connection is refused at once
# Redis hung: the engine gives up waiting for a connection after redis_pool_wait_s.
HUNG_ANSWER_S_MAX = engine_limits.redis_pool_wait_s + 3.0
WAIT_S_MAX = 60.0
RETRIES_MAX = 5
CLIENT_BACKOFF_S = 0.05
ACCT = "/wallet/reserves/USDT/crypto"


@dataclass
class Rig:
    """A throwaway Redis that can be stopped and restarted on its data, and the API on it."""

    port: int
    workdir: Path
    settings: Settings
    redis_stack: contextlib.ExitStack
    server: Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start_redis(self) -> None:
        self.redis_stack.enter_context(
            redis_server(self.port, AOF_ALWAYS, workdir=str(self.workdir)))

    def stop_redis(self) -> None:
        record("faults injected: Redis stopped under the API")
        self.redis_stack.close()

    def kill_redis(self) -> None:
        record("faults injected: Redis killed (SIGKILL) under load")
        pid = int(redis.Redis(port=self.port).info("server")["process_id"])
        os.kill(pid, signal.SIGKILL)
        self.redis_stack.close()  # reaps it


@pytest.fixture
def rig(tmp_path: Path, fresh_database_url: str) -> Iterator[Rig]:
    port = free_port()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    prefix = f"af{uuid.uuid4().hex[:10]}"
    settings = replace(Settings(), redis_url=f"redis://127.0.0.1:{port}/0", key_prefix=prefix,
                       database_url=fresh_database_url)
    with contextlib.ExitStack() as redis_stack:
        r = Rig(port, workdir, settings, redis_stack)
        r.start_redis()
        env = {"RESERVES_REDIS_URL": r.url, "RESERVES_KEY_PREFIX": prefix,
               "RESERVES_DATABASE_URL": fresh_database_url, "RESERVES_PERSIST_IN_PROCESS": "1",
               "RESERVES_RATE_LIMIT_PER_S": "0"}
        with api_server(tmp_path, env=env) as server:
            r.server = server
            yield r
            log = server.log()
        # No request failed unexpectedly (a background task may log Redis being away).
        for failure in ("unexpected error", "Exception in ASGI application"):
            assert failure not in log, log[-6000:]
        # Redis may have been left stopped by a failing test: the drain needs it.
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis(port=port).ping()
            drain_and_reconcile(r, counted=False)  # again, with the server stopped


def drain_and_reconcile(r: Rig, counted: bool = True) -> None:
    """Every journal event into Postgres (as the server's own consumer, so that its pending
    entries are taken up at once), then Redis against the ledger: no difference."""
    client = sync_client(r.settings)
    persister = Persister(client, r.settings, r.settings.database_url, consumer="api-embedded")
    try:
        persister.drain(timeout_s=WAIT_S_MAX)
        assert reconcile(client, r.settings, r.settings.database_url) == []
        if counted:
            record("reconcile after an API fault: runs with zero differences")
    finally:
        persister.close()
        close_shared_engines()  # before the database is dropped under its pooled connections
        client.close()


wait_until = functools.partial(services.wait_for, timeout_s=WAIT_S_MAX)


def answered_call(call: Callable[[], httpx.Response]) -> httpx.Response:
    """A pooled Redis connection broken by the fault fails once in the server (503): a client
    retries, as it must for any 503."""
    for _ in range(RETRIES_MAX):
        r = call()
        if r.status_code != 503:
            return r
    return r


def healthy(server: Server) -> bool:
    try:
        return httpx.get(server.url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def balance(http: httpx.Client) -> tuple[Decimal, Decimal]:
    r = answered_call(lambda: http.get(f"{ACCT}/balance", headers=ADMIN))
    assert r.status_code == 200, r.text
    body = r.json()["reserve"]
    return Decimal(str(body["total_balance"])), Decimal(str(body["locked_balance"]))


def top_up(http: httpx.Client, amount: str, reference: str) -> None:
    r = http.post(f"{ACCT}/topup", headers=ADMIN,
                  json={"amount": amount, "source_reference": reference})
    assert r.status_code == 200, r.text


def test_redis_stopped_answers_503_quickly_and_recovers(rig: Rig) -> None:
    assert rig.server is not None
    with httpx.Client(base_url=rig.server.url, timeout=30) as http:
        top_up(http, "1000", "af-seed")
        r = http.post(f"{ACCT}/reserve", headers=SERVICE,
                      json={"amount": "100", "reference_id": "af-held", "operation_type": "swap"})
        assert r.status_code == 200, r.text
        before = balance(http)
        rig.stop_redis()

        attempts: list[tuple[str, str, dict[str, str], Any]] = [
            ("GET", "/health", {}, None),
            ("POST", f"{ACCT}/reserve", SERVICE,
             {"amount": "7", "reference_id": "af-down-1", "operation_type": "swap"}),
            ("POST", f"{ACCT}/topup", ADMIN, {"amount": "5", "source_reference": "af-down-2"}),
            ("POST", f"{ACCT}/withdraw", ADMIN,
             {"amount": "5", "destination_reference": "af-down-3"}),
            ("POST", "/wallet/reserves/holds/af-held/commit", SERVICE, {"amount": "40"}),
            ("POST", "/wallet/reserves/holds/af-held/release", SERVICE, None),
            ("GET", "/wallet/reserves/holds/af-held", SERVICE, None),
            ("GET", f"{ACCT}/balance", ADMIN, None),
            ("GET", "/wallet/reserves/status", ADMIN, None),
            ("POST", f"{ACCT}/check", SERVICE, {"amount": "1"}),
            ("GET", "/wallet/reserves/status", {"Authorization": "Bearer unknown-token"}, None),
        ]
        for method, path, headers, body in attempts:
            started = time.monotonic()
            r = http.request(method, path, headers=headers, json=body)
            elapsed_s = time.monotonic() - started
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.json()["code"] == "redis_unavailable", r.text
            assert elapsed_s < UNAVAILABLE_ANSWER_S_MAX, (path, elapsed_s)

        rig.start_redis()
        wait_until(lambda: healthy(rig.server), "the API healthy again")
        # Nothing of the refused calls was applied.
        assert balance(http) == before
        assert answered_call(lambda: http.get("/wallet/reserves/holds/af-down-1",
                                              headers=SERVICE)).status_code == 404
        # The same calls now succeed, once.
        r = answered_call(lambda: http.post(
            f"{ACCT}/reserve", headers=SERVICE,
            json={"amount": "7", "reference_id": "af-down-1", "operation_type": "swap"}))
        assert r.status_code == 200, r.text
        r = answered_call(lambda: http.post("/wallet/reserves/holds/af-held/commit",
                                            headers=SERVICE, json={"amount": "40"}))
        assert r.status_code == 200, r.text
        assert balance(http) == (before[0] - 40, before[1] - 100 + 7)
    drain_and_reconcile(rig)


def test_redis_hung_answers_503_quickly(rig: Rig) -> None:
    """Redis alive but not answering (SIGSTOP: a stalled host or a network partition)."""
    assert rig.server is not None
    pid = int(redis.Redis(port=rig.port).info("server")["process_id"])
    with httpx.Client(base_url=rig.server.url, timeout=30) as http:
        top_up(http, "1000", "af-seed")
        before = balance(http)
        os.kill(pid, signal.SIGSTOP)
        record("faults injected: Redis hung (SIGSTOP)")
        try:
            for path, headers, body in [
                (f"{ACCT}/reserve", SERVICE,
                 {"amount": "7", "reference_id": "af-hung-1", "operation_type": "swap"}),
                (f"{ACCT}/topup", ADMIN, {"amount": "5", "source_reference": "af-hung-2"}),
            ]:
                started = time.monotonic()
                r = http.post(path, headers=headers, json=body)
                elapsed_s = time.monotonic() - started
                assert r.status_code == 503, (path, r.status_code, r.text)
                assert elapsed_s < HUNG_ANSWER_S_MAX, (path, elapsed_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: healthy(rig.server), "the API healthy again")
        # A call that timed out may have run in Redis after all: its retry tells, and counts once.
        for path, headers, body in [
            (f"{ACCT}/reserve", SERVICE,
             {"amount": "7", "reference_id": "af-hung-1", "operation_type": "swap"}),
            (f"{ACCT}/topup", ADMIN, {"amount": "5", "source_reference": "af-hung-2"}),
        ]:
            r = answered_call(lambda p=path, h=headers, b=body: http.post(p, headers=h, json=b))
            assert r.status_code == 200, r.text
        assert balance(http) == (before[0] + 5, before[1] + 7)
    drain_and_reconcile(rig)


@dataclass
class Flow:
    """One client's hold: reserve, then commit (odd) or release (even); the last answer of
    each step (0: no answer at all)."""

    reference: str
    amount: int
    commit: bool
    reserved: int = 0
    ended: int = 0
    started: bool = False


def run_flow(http: httpx.Client, flow: Flow) -> None:
    flow.started = True
    try:
        r = http.post(f"{ACCT}/reserve", headers=SERVICE,
                      json={"amount": str(flow.amount), "reference_id": flow.reference,
                            "operation_type": "swap"})
        flow.reserved = r.status_code
        if r.status_code != 200:
            return
        step = "commit" if flow.commit else "release"
        r = http.post(f"/wallet/reserves/holds/{flow.reference}/{step}", headers=SERVICE)
        flow.ended = r.status_code
    except httpx.HTTPError:
        pass


def load(server: Server, flows: list[Flow], workers: int) -> None:
    def work(mine: list[Flow]) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for flow in mine:
                run_flow(http, flow)
                if flow.ended != 200:
                    time.sleep(CLIENT_BACKOFF_S)  # as a client backs off after a 503

    threads = [threading.Thread(target=work, args=(flows[i::workers],)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def killed_under_load(rig: Rig, flow_count: int, kill_count: int) -> None:
    """SIGKILL during concurrent reserve / commit / release. appendfsync always: whatever was
    answered 200 survives the restart. What got no 200 is retried with the same reference
    (as a client must); repeats are idempotent, so every hold ends exactly once and the
    balance is exact to the minor unit."""
    assert rig.server is not None
    seed = 1_000_000
    flows = [Flow(f"af-k-{i}", 1 + i % 97, i % 2 == 1) for i in range(flow_count)]
    with httpx.Client(base_url=rig.server.url, timeout=30) as http:
        top_up(http, str(seed), "af-seed")
    loader = threading.Thread(target=load, args=(rig.server, flows, 8))
    loader.start()
    for k in range(kill_count):
        # Kill points by flows started, not answered: the refusals while Redis is away
        # must not starve the later kills of load (a slow restart refuses many).
        started_min = (k + 1) * flow_count // (kill_count + 2)
        wait_until(lambda n=started_min: sum(f.started for f in flows) >= n, "load under way")
        assert loader.is_alive(), "the load ended before every fault was injected"
        rig.kill_redis()
        time.sleep(0.5)  # requests meet the dead Redis
        rig.start_redis()
    loader.join()
    record("faults: flows run through a Redis SIGKILL", len(flows))
    answered = [f for f in flows if f.ended == 200]
    refused = [f for f in flows if f.reserved == 503 or f.ended == 503]
    assert answered and refused, (len(answered), len(refused))
    wait_until(lambda: healthy(rig.server), "the API healthy again")
    with httpx.Client(base_url=rig.server.url, timeout=30) as http:
        for flow in answered:  # an answered end survived the kill
            hold = answered_call(lambda f=flow: http.get(
                f"/wallet/reserves/holds/{f.reference}", headers=SERVICE))
            assert hold.status_code == 200, (flow, hold.text)
            assert hold.json()["hold"]["state"] == ("committed" if flow.commit else "released")
        for flow in flows:
            for _ in range(RETRIES_MAX):
                if flow.ended == 200:
                    break
                run_flow(http, flow)
            assert (flow.reserved, flow.ended) == (200, 200), flow
        total, locked = balance(http)
    committed = sum(f.amount for f in flows if f.commit)
    assert (total, locked) == (seed - committed, 0)
    drain_and_reconcile(rig)


def test_redis_killed_under_load_then_retries_come_out_exact(rig: Rig) -> None:
    killed_under_load(rig, flow_count=600, kill_count=1)


@pytest.mark.soak
def test_redis_killed_repeatedly_under_load_soak(rig: Rig) -> None:
    killed_under_load(rig, flow_count=4000, kill_count=4)


def _raw_request(port: int, head: bytes, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head + body)
    return sock


def _head(path: str, token: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees the connection torn down at once."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def test_clients_dropping_mid_request_change_nothing_wrongly(rig: Rig) -> None:
    assert rig.server is not None
    port = int(rig.server.url.rsplit(":", 1)[1])

    with httpx.Client(base_url=rig.server.url, timeout=30) as http:
        top_up(http, "100000", "af-seed")
        before = balance(http)
        # Half a body, then gone (closed, or reset): nothing may be applied.
        for i in range(40):
            body = (f'{{"amount": "{i + 1}", "reference_id": "af-half-{i}", '
                    f'"operation_type": "swap"}}').encode()
            sock = _raw_request(port, _head(f"{ACCT}/reserve", SERVICE_TOKEN, len(body)),
                                body[: len(body) // 2])
            _reset(sock) if i % 2 else sock.close()
            record("faults injected: client gone mid-body")
            body = f'{{"amount": "{i + 1}", "source_reference": "af-half-t{i}"}}'.encode()
            sock = _raw_request(port, _head(f"{ACCT}/topup", ADMIN_TOKEN, len(body)),
                                body[: len(body) // 2])
            _reset(sock) if i % 2 else sock.close()
        # Whole requests, then gone before the answer, while other clients go on normally.
        amounts = {f"af-gone-{i}": 1 + i % 13 for i in range(200)}
        normal: list[int] = []

        def steady() -> None:
            with httpx.Client(base_url=rig.server.url, timeout=30) as other:
                for i in range(100):
                    r = other.post(f"{ACCT}/check", headers=SERVICE, json={"amount": "1"})
                    normal.append(r.status_code)

        background = threading.Thread(target=steady)
        background.start()
        for reference, amount in amounts.items():
            body = (f'{{"amount": "{amount}", "reference_id": "{reference}", '
                    f'"operation_type": "swap"}}').encode()
            _reset(_raw_request(port, _head(f"{ACCT}/reserve", SERVICE_TOKEN, len(body)), body))
            record("faults injected: client gone before the answer")
        background.join()
        assert normal == [200] * 100
        assert healthy(rig.server)
        for i in range(40):
            assert http.get(f"/wallet/reserves/holds/af-half-{i}",
                            headers=SERVICE).status_code == 404
        # A dropped request may or may not have been applied; either way a hold is whole,
        # and a retry of the same reference gives exactly one hold.
        held = 0
        for reference, amount in amounts.items():
            r = http.get(f"/wallet/reserves/holds/{reference}", headers=SERVICE)
            if r.status_code == 200:
                assert Decimal(str(r.json()["hold"]["amount"])) == amount
                assert r.json()["hold"]["state"] == "pending"
                held += amount
            else:
                assert r.status_code == 404, r.text
        total, locked = balance(http)
        assert (total, locked) == (before[0], before[1] + held)
        for reference, amount in amounts.items():
            r = http.post(f"{ACCT}/reserve", headers=SERVICE,
                          json={"amount": str(amount), "reference_id": reference,
                                "operation_type": "swap"})
            assert r.status_code == 200, r.text
        assert balance(http) == (before[0], before[1] + sum(amounts.values()))
    drain_and_reconcile(rig)
