"""Fuzzing the HTTP API with schemathesis against /openapi.json of a real `reserves serve`
(uvicorn on loopback, real Redis): with an admin token, a service token, no token and a bad
token (the spec's own random ones). Every response must be declared by the spec (status,
content type, body, headers), invalid input must be refused, no request may cause a 5xx, and a
refused request (4xx) must move no money: every balance change between before and after a call
is one of the journal's money events, a refused call's events net to zero per account (a flow
undoing its own steps), and a refused /wallet/reserves call appends none. The sweeper's expiries
are the only other writer, and they are journalled too.

`make test` runs a bounded number of examples per operation; the `soak` variant runs more.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine.journal import MONEY_OPERATIONS, JournalEvent
from engine.keys import KeySpace
from tests.api_server import ADMIN, ADMIN_TOKEN, SERVICE, SERVICE_TOKEN, Server, api_server
from tests.reliability import record
from tests.services import delete_prefix

pytestmark = pytest.mark.real

EXAMPLES_PER_OPERATION = int(os.environ.get("RESERVES_FUZZ_EXAMPLES", "15"))
SOAK_EXAMPLES_PER_OPERATION = 50
SHARDS = 2
CURRENCIES = [("USDT", "crypto"), ("BTC", "crypto"), ("UGX", "fiat"), ("KES", "fiat")]
AUTH = {"admin": ADMIN, "service": SERVICE, "none": {},
        "bad": {"Authorization": "Bearer not-a-real-token-0000"}}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance, negative_data_rejection]


@dataclass
class Ledger:
    """Balances and journal positions read straight from Redis (not through the API)."""

    client: redis.Redis
    keys: KeySpace
    positions: dict[str, str] = field(default_factory=dict)

    def balances(self) -> dict[str, tuple[int, int]]:
        labels = sorted(set().union(*(self.client.smembers(self.keys.accounts_set(s))
                                      for s in range(self.keys.shard_count))))
        pipe = self.client.pipeline(transaction=False)
        for label in labels:
            pipe.hmget(self.keys.account(label).acct, "total", "locked")
        return {label: (int(total or 0), int(locked or 0))
                for label, (total, locked) in zip(labels, pipe.execute(), strict=True)}

    def mark(self) -> None:
        for stream in self.keys.streams():
            last = self.client.xrevrange(stream, count=1)
            self.positions[stream] = last[0][0] if last else "0-0"

    def new_events(self) -> list[JournalEvent]:
        events = []
        for stream in self.keys.streams():
            start = self.positions.get(stream, "0-0")
            for stream_id, fields in self.client.xrange(stream, min=f"({start}", max="+"):
                events.append(JournalEvent.parse(stream_id, fields))
        return events


@dataclass
class Fuzz:
    server: Server
    ledger: Ledger
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)  # auth -> status -> n
    references: list[str] = field(default_factory=list)
    refused: int = 0
    cases: int = 0
    mode: GenerationMode = GenerationMode.POSITIVE


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fuzz]:
    prefix = f"fz{uuid.uuid4().hex[:10]}"
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    env = {"RESERVES_REDIS_URL": redis_url, "RESERVES_KEY_PREFIX": prefix,
           "RESERVES_RATE_LIMIT_PER_S": "0", "RESERVES_SHARDS": str(SHARDS)}
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with api_server(tmp, env=env, args=("--no-access-log",)) as server:
            with httpx.Client(base_url=server.url, timeout=10) as http:
                for i, (code, kind) in enumerate(CURRENCIES):  # money to lock, commit, withdraw
                    r = http.post(f"/wallet/reserves/{code}/{kind}/topup", headers=ADMIN,
                                  json={"amount": "1000000", "source_reference": f"seed-{i}"})
                    assert r.status_code == 200, r.text
            fz = Fuzz(server, Ledger(client, KeySpace(prefix, SHARDS)))
            yield fz
            log = server.log()
        print(f"\nAPI fuzz: {fz.cases} requests, {fz.refused} refused, statuses "
              f"{ {a: sorted(s.items()) for a, s in fz.statuses.items()} }")
        assert "Traceback" not in log, log[-4000:]
        for token in (ADMIN_TOKEN, SERVICE_TOKEN):
            assert token not in log
    finally:
        delete_prefix(client, prefix)
        client.close()


def load_schema(fz: Fuzz) -> Any:
    schema = schemathesis.openapi.from_url(fz.server.url + "/openapi.json")

    # Half the positive cases on a reserve or a hold that exists, so that the handlers past the
    # lookup are fuzzed too (holds: the references of earlier successful reserves).
    @schema.hook
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
        pp = path_parameters or {}
        if fz.mode is not GenerationMode.POSITIVE:  # a negative case must stay invalid
            return st.just(path_parameters)
        if "currency" in pp:
            real = st.sampled_from(CURRENCIES).map(
                lambda ck: {**pp, "currency": ck[0], "account_type": ck[1]})
        elif "reference_id" in pp:
            real = st.integers(0, 1 << 16).map(
                lambda i: {**pp, "reference_id": fz.references[i % len(fz.references)]}
                if fz.references else pp)
        else:
            return st.just(path_parameters)
        return st.one_of(st.just(pp), real)

    return schema


def set_auth(case: Any, auth: str) -> None:
    """The spec's security scheme makes schemathesis generate random Authorization headers:
    keep them in the bad-token mode (fuzzing the token parser), replace them otherwise."""
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    generated = (case.headers or {}).get("Authorization")
    if auth == "bad":
        headers["Authorization"] = generated or AUTH["bad"]["Authorization"]
    else:
        headers.update(AUTH[auth])
    case.headers = headers


def check_case(fz: Fuzz, case: Any, auth: str) -> None:
    fz.ledger.mark()
    before = fz.ledger.balances()
    set_auth(case, auth)
    response = case.call_and_validate(checks=CHECKS, timeout=10)
    seen = fz.statuses.setdefault(auth, {})
    seen[response.status_code] = seen.get(response.status_code, 0) + 1
    if response.status_code == 200 and case.path.endswith("/reserve"):
        fz.references.append(case.body["reference_id"])
    after = fz.ledger.balances()
    events = fz.ledger.new_events()
    money = [e for e in events if e.op in MONEY_OPERATIONS]
    # Every balance change is accounted for by the journal events appended meanwhile.
    for label in set(before) | set(after):
        mine = [e for e in money if e.account == label]
        total0, locked0 = before.get(label, (0, 0))
        expected = (total0 + sum(e.d_total_minor for e in mine),
                    locked0 + sum(e.d_locked_minor for e in mine))
        assert after.get(label, (0, 0)) == expected, (label, events)
        total, locked = expected
        assert total >= locked >= 0, label
        if response.status_code >= 400:
            # Refused: no net change, but for what the sweeper expired meanwhile; a flow that
            # failed half-way has undone its own steps (lock then release nets to zero).
            own = [e for e in mine if e.op != "reserve_expire"]
            assert sum(e.d_total_minor for e in own) == 0, (response.status_code, own)
            assert sum(e.d_locked_minor for e in own) == 0, (response.status_code, own)
    if response.status_code >= 400:
        fz.refused += 1
        record("API fuzzing: refused requests that moved no money")
        if case.path.startswith("/wallet/reserves/"):  # one script each: refused writes nothing
            assert all(e.op == "reserve_expire" for e in money), (response.status_code, money)


def run_fuzz(fz: Fuzz, auth: str, examples: int) -> None:
    """Every operation, positive then negative cases; all failures reported together."""
    failures: list[str] = []
    operations = [result.ok() for result in load_schema(fz).get_all_operations()]
    assert len(operations) >= 13
    for operation in operations:
        takes_input = any(k in operation.definition.raw for k in ("parameters", "requestBody"))
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if takes_input else [])
        for mode in modes:
            fz.mode = mode

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case: Any) -> None:
                check_case(fz, case, auth)
                fz.cases += 1
                record("API fuzzing: requests sent (all checks passed)")

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect, fail once
                failures.append(f"{operation.label} ({mode}): {type(exc).__name__}: {exc}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("auth", ["admin", "service"])
def test_fuzz(fuzz: Fuzz, auth: str) -> None:
    run_fuzz(fuzz, auth, EXAMPLES_PER_OPERATION)


# Without a valid token everything but the public routes is a 401: fewer examples suffice.
@pytest.mark.parametrize("auth", ["none", "bad"])
def test_fuzz_without_token(fuzz: Fuzz, auth: str) -> None:
    run_fuzz(fuzz, auth, max(1, EXAMPLES_PER_OPERATION // 4))


@pytest.mark.soak
@pytest.mark.parametrize("auth", ["admin", "service"])
def test_fuzz_soak(fuzz: Fuzz, auth: str) -> None:
    run_fuzz(fuzz, auth, SOAK_EXAMPLES_PER_OPERATION)
