"""Swaps and mobile money through the real HTTP stack: `reserves serve` (uvicorn) on loopback,
the real Redis, a Postgres database of its own with the persister inside the server. Every
balance is read back through the API and checked to the minor unit; every refusal leaves every
balance as it was; the journal reaches Postgres and reconciles with zero differences."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from engine.config import Settings
from engine.references import flow_reference
from persistence.reconcile import reconcile
from persistence.store import Store
from tests import services
from tests.api_server import ADMIN, SERVICE, api_server

pytestmark = pytest.mark.real

SECRET = "test-callback-secret"
REFUSED_PHONE = "+256700000666"  # the simulated provider refuses it (RESERVES_MOBILE_MONEY_REFUSE)
PHONE = "+256700000001"
RESERVES = [("USDT", "crypto"), ("UGX", "fiat"), ("KES", "fiat")]

Balances = dict[str, tuple[D, D]]


def exact(response: httpx.Response) -> Any:
    """The body with numbers as Decimals: what the server wrote, not a float's rounding."""
    return json.loads(response.text, parse_float=D)


wait_for = functools.partial(services.wait_for, timeout_s=30.0)


@dataclass
class Api:
    http: httpx.Client
    settings: Settings

    def post(self, path: str, body: Any, headers: dict[str, str] = SERVICE) -> httpx.Response:
        return self.http.post(path, content=json.dumps(body), headers=headers)

    def get(self, path: str, headers: dict[str, str] = SERVICE) -> httpx.Response:
        return self.http.get(path, headers=headers)

    def top_up(self, currency: str, kind: str, amount: str) -> None:
        r = self.post(f"/wallet/reserves/{currency}/{kind}/topup",
                      {"amount": amount, "source_reference": f"seed-{currency}-{amount}"}, ADMIN)
        assert r.status_code == 200, r.text

    def deposit(self, user: str, currency: str, amount: str, ref: str) -> dict[str, Any]:
        r = self.post(f"/wallet/users/{user}/{currency}/deposit",
                      {"amount": amount, "reference_id": ref})
        assert r.status_code == 200, r.text
        return dict(exact(r))

    def balances(self, *users: str) -> Balances:
        """(total, locked) of every reserve and of the users' wallets, exact."""
        out: Balances = {}
        for currency, kind in RESERVES:
            r = self.get(f"/wallet/reserves/{currency}/{kind}/balance", ADMIN)
            if r.status_code == 404:
                continue  # never opened
            reserve = exact(r)["reserve"]
            out[f"RESERVE_{currency}"] = (reserve["total_balance"], reserve["locked_balance"])
        for user in users:
            r = self.get(f"/wallet/users/{user}/balances")
            assert r.status_code == 200, r.text
            for currency, b in exact(r)["balances"].items():
                out[f"{user}_{currency}"] = (b["total_balance"], b["locked_balance"])
        return out

    def swap(self, ref: str, amount: str, source: str = "USDT", target: str = "UGX",
             **extra: Any) -> httpx.Response:
        return self.post("/wallet/swaps", {"user_id": "u1", "from_currency": source,
                                           "to_currency": target, "from_amount": amount,
                                           "reference_id": ref, **extra})

    def buy(self, ref: str, fiat_amount: str, fiat: str = "UGX",
            phone: str = PHONE) -> httpx.Response:
        return self.post("/wallet/mobile-money/buy", {
            "user_id": "u1", "fiat_currency": fiat, "crypto_currency": "USDT",
            "fiat_amount": fiat_amount, "phone_number": phone, "reference_id": ref})

    def sell(self, ref: str, crypto_amount: str, fiat: str = "UGX",
             phone: str = PHONE) -> httpx.Response:
        return self.post("/wallet/mobile-money/sell", {
            "user_id": "u1", "crypto_currency": "USDT", "fiat_currency": fiat,
            "crypto_amount": crypto_amount, "phone_number": phone, "reference_id": ref})

    def callback(self, operation: dict[str, Any], status: str, secret: str = SECRET,
                 signature: str | None = None) -> httpx.Response:
        """The provider's callback: HMAC-SHA256 of the raw body, hex, in X-Signature."""
        raw = json.dumps({"provider_tx_id": operation["provider_tx_id"],
                          "reference_id": operation["reference_id"], "status": status,
                          "timestamp_ms": int(time.time() * 1000)}).encode()
        if signature is None:
            signature = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        return self.http.post("/wallet/mobile-money/callback", content=raw,
                              headers={"X-Signature": signature,
                                       "Content-Type": "application/json"})

    def operation(self, ref: str) -> dict[str, Any]:
        r = self.get(f"/wallet/mobile-money/{ref}")
        assert r.status_code == 200, r.text
        return dict(exact(r)["operation"])

    def reconciled(self) -> list[str]:
        """Waits for the persister; then Redis and the Postgres ledger agree exactly."""
        client = redis.Redis.from_url(self.settings.redis_url or "", decode_responses=True)
        try:
            wait_for(lambda: not reconcile(client, self.settings, self.settings.database_url),
                     "Redis and Postgres to agree")
            return []
        finally:
            client.close()

    def ledger_holds(self) -> dict[str, str]:
        store = Store(self.settings.database_url)
        try:
            return {row.reference: row.state for row in store.holds()}
        finally:
            store.close()

    def ledger_actions(self) -> list[str]:
        store = Store(self.settings.database_url)
        try:
            return [row.action for row in store.audit_rows()]
        finally:
            store.close()


@contextmanager
def serve(tmp_path: Path, redis_url: str, database_url: str,
          **extra_env: str) -> Iterator[Api]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    env = {"RESERVES_REDIS_URL": redis_url, "RESERVES_DATABASE_URL": database_url,
           "RESERVES_KEY_PREFIX": prefix, "RESERVES_PERSIST_IN_PROCESS": "1",
           "RESERVES_MOBILE_MONEY_SECRET": SECRET, "RESERVES_MOBILE_MONEY_REFUSE": REFUSED_PHONE,
           **extra_env}
    settings = replace(Settings(), redis_url=redis_url, database_url=database_url,
                       key_prefix=prefix)
    try:
        with api_server(tmp_path, env) as server, httpx.Client(base_url=server.url,
                                                               timeout=10) as http:
            yield Api(http, settings)
            log = server.log()
        assert "Traceback" not in log, log[-4000:]
    finally:
        services.delete_prefix_at(redis_url, prefix)


@pytest.fixture
def api(tmp_path: Path, redis_url: str, fresh_database_url: str) -> Iterator[Api]:
    with serve(tmp_path, redis_url, fresh_database_url) as started:
        yield started


def test_swap_buy_and_sell_succeed_to_the_minor_unit(api: Api) -> None:
    api.top_up("USDT", "crypto", "1000")
    api.top_up("UGX", "fiat", "10000000")
    first = api.deposit("u1", "USDT", "100", "dep1")
    assert (first["deposited_amount"], first["applied"]) == (D("100"), True)
    assert api.deposit("u1", "USDT", "100", "dep1")["applied"] is False  # a repeat

    # swap 10.5 USDT at a quote: 10.5 * 3700 * (1 - 0.01) = 38461.5, rounded down to 38461 UGX
    r = api.get("/wallet/quotes?from=USDT&to=UGX&amount=10.5")
    assert r.status_code == 200, r.text
    quote = exact(r)["quote"]
    assert (quote["to_amount"], quote["rate"], quote["spread"]) == (D("38461"), D("3700"),
                                                                    D("0.01"))
    r = api.swap("s1", "10.5", quote_id=quote["quote_id"])
    assert r.status_code == 200, r.text
    swap = exact(r)["swap"]
    assert (swap["state"], swap["to_amount"], swap["quote_id"]) == (
        "completed", D("38461"), quote["quote_id"])
    assert {leg["reference_id"]: (leg["role"], leg["state"]) for leg in swap["legs"]} == {
        flow_reference("swap", "s1", "from"): ("from", "released"),
        flow_reference("swap", "s1", "to"): ("to", "committed"),
        flow_reference("swap", "s1", "user"): ("user", "committed")}
    after_swap = {"RESERVE_USDT": (D("1010.5"), D(0)), "RESERVE_UGX": (D("9961539"), D(0)),
                  "RESERVE_KES": (D(0), D(0)), "u1_USDT": (D("89.5"), D(0)),
                  "u1_UGX": (D("38461"), D(0))}
    assert api.balances("u1") == after_swap
    # duplicate request: the same answer, nothing moves; the reference with another amount: 409
    again = api.swap("s1", "10.50", quote_id=quote["quote_id"])
    assert (again.status_code, exact(again)) == (200, exact(r))
    conflict = api.swap("s1", "11", quote_id=quote["quote_id"])
    assert (conflict.status_code, exact(conflict)["code"]) == (409, "reference_conflict")
    assert exact(api.get("/wallet/swaps/s1"))["swap"] == swap
    assert api.balances("u1") == after_swap

    # buy: 37000 UGX * 0.00027 * 0.99 = 9.8901 USDT, held until the collection's callback
    r = api.buy("b1", "37000")
    assert r.status_code == 200, r.text
    buy = exact(r)["operation"]
    assert (buy["state"], buy["crypto_amount"], buy["direction"]) == ("pending", D("9.8901"),
                                                                     "buy")
    assert api.buy("b1", "37000").text == r.text  # duplicate request: the same operation
    pending = {**after_swap, "RESERVE_USDT": (D("1010.5"), D("9.8901"))}
    assert api.balances("u1") == pending
    # forged or damaged callbacks: 401, no bearer challenge, nothing changes
    for bad in (api.callback(buy, "failed", secret="not-the-secret"),
                api.callback(buy, "failed", signature="00" * 32),
                api.callback(buy, "success", signature="")):
        assert (bad.status_code, exact(bad)["success"]) == (401, False), bad.text
        assert "www-authenticate" not in bad.headers
    assert api.balances("u1") == pending
    assert api.operation("b1") == buy
    done = api.callback(buy, "success")
    assert done.status_code == 200, done.text
    assert (exact(done)["duplicate_callback"], exact(done)["operation"]["state"]) == (
        False, "completed")
    after_buy = {**after_swap, "RESERVE_USDT": (D("1000.6099"), D(0)),
                 "RESERVE_UGX": (D("9998539"), D(0)), "u1_USDT": (D("99.3901"), D(0))}
    assert api.balances("u1") == after_buy
    for status in ("success", "failed"):  # duplicates, even contradicting: the first stands
        dup = exact(api.callback(buy, status))
        assert (dup["duplicate_callback"], dup["operation"]["state"]) == (True, "completed")
    assert api.balances("u1") == after_buy

    # sell: 10 USDT * 3700 * 0.99 = 36630 UGX; the user's USDT and the payout held meanwhile
    r = api.sell("sl1", "10")
    assert r.status_code == 200, r.text
    sell = exact(r)["operation"]
    assert (sell["state"], sell["fiat_amount"]) == ("pending", D("36630"))
    assert api.balances("u1") == {**after_buy, "RESERVE_UGX": (D("9998539"), D("36630")),
                                  "u1_USDT": (D("99.3901"), D("10"))}
    assert exact(api.callback(sell, "success"))["operation"]["state"] == "completed"
    assert api.balances("u1") == {**after_buy, "RESERVE_USDT": (D("1010.6099"), D(0)),
                                  "RESERVE_UGX": (D("9961909"), D(0)),
                                  "u1_USDT": (D("89.3901"), D(0))}

    assert api.reconciled() == []
    holds = api.ledger_holds()
    legs = {flow_reference(kind, flow, leg): (flow, leg) for kind, flow, leg in (
        ("swap", "s1", "from"), ("swap", "s1", "to"), ("swap", "s1", "user"),
        ("mm", "b1", "crypto"), ("mm", "sl1", "fiat"), ("mm", "sl1", "user"))}
    assert {legs[ref]: state for ref, state in holds.items() if ref in legs} == {
        ("s1", "from"): "released", ("s1", "to"): "committed", ("s1", "user"): "committed",
        ("b1", "crypto"): "committed", ("sl1", "fiat"): "committed",
        ("sl1", "user"): "committed"}
    actions = api.ledger_actions()
    assert {"swap_completed", "buy_completed", "sell_completed"} <= set(actions)


def test_every_refusal_rolls_back_exactly(api: Api) -> None:
    api.top_up("USDT", "crypto", "5")
    api.top_up("UGX", "fiat", "1000")
    api.top_up("KES", "fiat", "100")
    api.deposit("u1", "USDT", "20", "dep1")

    def refused(response: httpx.Response, status: int, before: Balances) -> dict[str, Any]:
        assert response.status_code == status, response.text
        assert api.balances("u1") == before
        return dict(exact(response))

    def reserve_status(required: str, available: str, total: str, locked: str = "0",
                       ) -> dict[str, Any]:
        return {"is_sufficient": False, "required_amount": D(required),
                "available_amount": D(available),
                "utilization_percentage": (D(locked) * 100 / D(total)).quantize(D("0.01")),
                "status": "healthy"}

    # a swap, short on the from leg (the USDT reserve), then on the to leg (UGX): the seed's 409
    before = api.balances("u1")
    body = refused(api.swap("sw-from", "10"), 409, before)
    assert body == {"success": False,
                    "error": "Insufficient reserve balance. Required: 10.0, Available: 5.0",
                    "code": "exceeds_available", "leg": "from",
                    "reserve_status": reserve_status("10", "5", "5")}
    repeat = api.swap("sw-from", "10")  # a repeat of a refused request: the same answer
    assert (repeat.status_code, exact(repeat)) == (409, body)
    api.top_up("USDT", "crypto", "1000")
    before = api.balances("u1")
    body = refused(api.swap("sw/to", "10"), 409, before)
    assert body == {"success": False,
                    "error": "Insufficient reserve balance. Required: 36630.0, Available: 1000.0",
                    "code": "exceeds_available", "leg": "to",
                    "reserve_status": reserve_status("36630", "1000", "1000")}
    assert exact(api.get("/wallet/swaps/sw%2Fto"))["swap"]["state"] == "failed"

    # the user's funds short, on a swap and on a sell
    api.top_up("UGX", "fiat", "10000000")
    before = api.balances("u1")
    body = refused(api.swap("sw-funds", "30"), 409, before)
    assert (body["error"], body["code"]) == ("Insufficient funds. Required: 30.0, Available: "
                                             "20.0", "insufficient_funds")
    body = refused(api.sell("sl-funds", "25"), 409, before)
    assert body["code"] == "insufficient_funds"

    # mobile money short on its reserve: the crypto one for a buy, the fiat one for a sell
    body = refused(api.buy("b-short", "37000000"), 409, before)  # 9890.1 USDT
    assert (body["error"], body["leg"]) == (
        "Insufficient reserve balance. Required: 9890.1, Available: 1005.0", "crypto")
    body = refused(api.sell("sl-short", "10", fiat="KES"), 409, before)  # 1282.05 KES
    assert (body["error"], body["leg"]) == (
        "Insufficient reserve balance. Required: 1282.05, Available: 100.0", "fiat")

    # the provider refuses to start the collection / payout: 502, the holds released
    for start in (api.buy, api.sell):
        amount = "37000" if start == api.buy else "10"
        body = refused(start(f"{start.__name__}-502", amount, phone=REFUSED_PHONE), 502, before)
        assert body["code"] == "provider_refused"
        assert api.operation(f"{start.__name__}-502")["state"] == "failed"
        again = start(f"{start.__name__}-502", amount, phone=REFUSED_PHONE)
        assert (again.status_code, exact(again)) == (502, body)

    # the provider reports failure: everything held is released
    for start, amount in ((api.buy, "37000"), (api.sell, "10")):
        r = start(f"{start.__name__}-fail", amount)
        assert r.status_code == 200, r.text
        operation = exact(r)["operation"]
        assert api.balances("u1") != before  # held meanwhile
        done = exact(api.callback(operation, "failed"))["operation"]
        assert (done["state"], {leg["state"] for leg in done["legs"]}) == ("failed",
                                                                          {"released"})
        assert api.balances("u1") == before

    assert api.reconciled() == []
    # reconcile can agree before the persister wrote the last flow's events: wait for them
    holds = wait_for(lambda: (h := api.ledger_holds()) and "pending" not in h.values() and h,
                     "the ledger's holds to end")
    assert "pending" not in holds.values()
    assert holds[flow_reference("mm", "buy-fail", "crypto")] == "released"
    assert holds[flow_reference("mm", "sell-fail", "user")] == "released"


def test_callback_never_arriving_expires_and_releases(
        tmp_path: Path, redis_url: str, fresh_database_url: str) -> None:
    with serve(tmp_path, redis_url, fresh_database_url, RESERVES_MOBILE_MONEY_TTL_S="1") as api:
        api.top_up("USDT", "crypto", "1000")
        api.top_up("UGX", "fiat", "100000")
        api.deposit("u1", "USDT", "20", "dep1")
        before = api.balances("u1")
        operations = [exact(api.buy("b1", "37000"))["operation"],
                      exact(api.sell("s1", "10"))["operation"]]
        # the server's recovery task expires them once their deadline passed
        for op in operations:
            assert op["state"] == "pending"
            expired = wait_for(lambda ref=op["reference_id"]: (
                lambda o: o if o["state"] == "expired" else None)(api.operation(ref)),
                f"{op['reference_id']} to expire")
            assert {leg["state"] for leg in expired["legs"]} == {"expired"}
        assert api.balances("u1") == before
        late = exact(api.callback(operations[0], "success"))  # too late: flagged
        assert (late["duplicate_callback"], late["operation"]["state"]) == (
            True, "settled_after_expiry")
        assert api.balances("u1") == before
        assert api.reconciled() == []
        assert {"buy_expired", "sell_expired"} <= set(api.ledger_actions())


def test_a_late_success_is_flagged_and_an_admin_settles_it(
        tmp_path: Path, redis_url: str, fresh_database_url: str) -> None:
    with serve(tmp_path, redis_url, fresh_database_url, RESERVES_MOBILE_MONEY_TTL_S="1") as api:
        api.top_up("USDT", "crypto", "1000")
        api.top_up("UGX", "fiat", "100000")
        before = api.balances("u1")
        op = exact(api.buy("b1", "37000"))["operation"]
        wait_for(lambda: api.operation("b1")["state"] == "expired", "b1 to expire")
        late = api.callback(op, "success")
        assert late.status_code == 200, late.text
        assert exact(late)["operation"]["state"] == "settled_after_expiry"
        assert api.get("/wallet/flows/flagged").status_code == 403  # admin only
        flagged = exact(api.get("/wallet/flows/flagged", ADMIN))["flows"]
        assert [(f["kind"], f["reference_id"], f["state"], f["flag"]) for f in flagged] == [
            ("mm", "b1", "settled_after_expiry", "settled_after_expiry")]
        alerts = exact(api.get("/wallet/reserves/alerts", ADMIN))
        assert "mm:b1|flow_flagged" in json.dumps(alerts)
        settle = "/wallet/mobile-money/b1/settle"
        assert api.post(settle, {"action": "credit"}).status_code == 403
        bad = api.post(settle, {"action": "burn"}, ADMIN)
        assert (bad.status_code, bad.json()["code"]) == (400, "invalid_action")
        done = api.post(settle, {"action": "credit"}, ADMIN)
        assert done.status_code == 200, done.text
        assert exact(done)["operation"]["state"] == "completed"
        again = api.post(settle, {"action": "credit"}, ADMIN)  # idempotent
        assert (again.status_code, exact(again)["operation"]["state"]) == (200, "completed")
        other = api.post(settle, {"action": "refunded"}, ADMIN)
        assert (other.status_code, other.json()["code"]) == (409, "already_settled")
        after = api.balances("u1")
        assert after["RESERVE_USDT"] == (before["RESERVE_USDT"][0] - D("9.8901"), 0)
        assert after["RESERVE_UGX"] == (before["RESERVE_UGX"][0] + 37000, 0)
        assert after["u1_USDT"] == (D("9.8901"), 0)
        assert exact(api.get("/wallet/flows/flagged", ADMIN))["flows"] == []
        assert api.reconciled() == []
        actions = api.ledger_actions()
        assert {"flow_settle", "flow_settle_refused", "buy_completed"} <= set(actions)


def test_a_replayed_or_stale_callback_is_refused(
        tmp_path: Path, redis_url: str, fresh_database_url: str) -> None:
    with serve(tmp_path, redis_url, fresh_database_url) as api:
        api.top_up("USDT", "crypto", "1000")
        api.top_up("UGX", "fiat", "100000")
        op = exact(api.buy("b1", "37000"))["operation"]
        stale = json.dumps({"provider_tx_id": op["provider_tx_id"], "reference_id": "b1",
                            "status": "success",
                            "timestamp_ms": int(time.time() * 1000) - 3_600_000}).encode()
        r = api.http.post("/wallet/mobile-money/callback", content=stale, headers={
            "X-Signature": hmac.new(SECRET.encode(), stale, hashlib.sha256).hexdigest()})
        assert (r.status_code, r.json()["code"]) == (401, "callback_stale")
        assert api.operation("b1")["state"] == "pending"
        assert api.callback(op, "success").status_code == 200
        assert api.operation("b1")["state"] == "completed"
        # its record gone (the retention), the reference still cannot start a new buy
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        client.delete(f"{api.settings.key_prefix}:flow:mm:b1")
        client.close()
        again = api.buy("b1", "37000")
        assert (again.status_code, again.json()["code"]) == (409, "reference_reused")
        replay = api.callback(op, "success")
        assert (replay.status_code, replay.json()["code"]) == (404, "operation_not_found")


def test_a_pending_buy_survives_a_restart_of_the_embedded_default(tmp_path: Path) -> None:
    env = {"RESERVES_MOBILE_MONEY_SECRET": SECRET}
    db_url = f"sqlite:///{tmp_path / 'reserves.db'}"
    settings = replace(Settings(), redis_url=None, database_url=db_url)

    def persisted_state(ref: str) -> str | None:
        store = Store(db_url)
        try:
            rows = [r.request for r in store.audit_rows() if r.action == "flow_state"]
        finally:
            store.close()
        states = [r["record"].get("state") for r in rows if r["reference_id"] == ref]
        return states[-1] if states else None

    with api_server(tmp_path, env) as server, httpx.Client(base_url=server.url,
                                                           timeout=10) as http:
        api = Api(http, settings)
        api.top_up("USDT", "crypto", "1000")
        api.top_up("UGX", "fiat", "100000")
        op = exact(api.buy("b1", "37000"))["operation"]
        assert op["state"] == "pending"
        wait_for(lambda: persisted_state("b1") == "pending", "the buy to reach SQLite")
    with api_server(tmp_path, env) as server, httpx.Client(base_url=server.url,
                                                           timeout=10) as http:
        api = Api(http, settings)
        assert api.operation("b1")["state"] == "pending"
        again = api.buy("b1", "37000")  # a repeat: the same operation, no second collection
        assert (again.status_code, exact(again)["operation"]["provider_tx_id"]) == (
            200, op["provider_tx_id"])
        done = api.callback(op, "success")
        assert done.status_code == 200, done.text
        assert exact(done)["operation"]["state"] == "completed"
        assert api.balances("u1")["u1_USDT"] == (D("9.8901"), 0)
