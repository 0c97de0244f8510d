#!/usr/bin/env python3
"""The design document's reserve checks, run against a live `reserves serve`.

    python test_reserve_system.py [--url http://127.0.0.1:3000] [--token ADMIN]
                                  [--service-token SERVICE] [--crypto USDT] [--fiat UGX]

Walks every endpoint and error case of docs' Reserve Management System (status, balance,
top-up, withdraw, analytics, cache clear; check, reserve, hold, release, commit; the Error
Handling section's refusals) and prints one row per check. Exit status 1 if any check failed.

It leaves the reserves as it found them: its references carry a per-run id, every hold it takes
is released or committed, and what it topped up (less what it committed) is withdrawn again;
the last checks compare each touched reserve's total and locked balance with the first reading.
Run it against a quiet instance: other traffic on the same reserves changes their balances.

Standard library only. Amounts go out as exact JSON numbers and come back parsed as Decimal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

DEFAULT_URL = "http://127.0.0.1:3000"
THRESHOLDS = (("critical", 90), ("warning", 75), ("moderate", 50))  # the document's levels
DOC_RESERVE_KEYS = ("currency", "account_type", "total_balance", "available_balance",
                    "locked_balance", "utilization_percentage", "status", "account_id",
                    "account_number")
DOC_STATUS_KEYS = ("is_sufficient", "required_amount", "available_amount",
                   "utilization_percentage", "status")
REQUEST_TIMEOUT_S = 15.0
PERSIST_WAIT_S = 20.0


# -- JSON with exact numbers --------------------------------------------------------------------


def dumps(value: Any) -> str:
    """JSON text where a Decimal is written as the exact number it is (1000.0, 0.000001)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def loads(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def D(text: str | int) -> Decimal:
    return Decimal(text)


# -- HTTP ---------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    def get(self, *path: str) -> Any:
        node = self.body
        for name in path:
            if not isinstance(node, dict):
                return None
            node = node.get(name)
        return node

    def brief(self) -> str:
        text = dumps(self.body) if not isinstance(self.body, str) else self.body
        return f"{self.status} {text[:300]}"


class Client:
    def __init__(self, url: str, admin_token: str, service_token: str) -> None:
        self.url = url.rstrip("/")
        self.admin_token = admin_token
        self.service_token = service_token

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = "admin",
                raw: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
        """token: "admin", "service", None (no header) or a literal token."""
        send = dict(headers or {})
        bearer = {"admin": self.admin_token, "service": self.service_token}.get(token or "", token)
        if bearer:
            send["Authorization"] = f"Bearer {bearer}"
        data = raw if raw is not None else (None if body is None else dumps(body).encode())
        if data is not None:
            send.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=send)
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
                status, text, got = resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            status, text, got = err.code, err.read().decode(errors="replace"), dict(err.headers)
        try:
            parsed = loads(text) if text else None
        except ValueError:
            parsed = text
        return Reply(status, parsed, {k.lower(): v for k, v in got.items()})

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)


# -- the table of checks ------------------------------------------------------------------------


@dataclass
class Checks:
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # name, ok|FAIL|skip, detail

    def check(self, name: str, ok: bool, detail: Any = "") -> bool:
        self.rows.append((name, "ok" if ok else "FAIL", str(detail)))
        return bool(ok)

    def skip(self, name: str, why: str) -> None:
        """A check this run could not make (shown, not a failure)."""
        self.rows.append((name, "skip", why))

    def equal(self, name: str, got: Any, want: Any) -> bool:
        ok = got == want
        return self.check(name, ok, f"{got!r}" if ok else f"got {got!r}, want {want!r}")

    def reply(self, name: str, reply: Reply, status: int, /, **fields: Any) -> bool:
        """The status, success flag and exact fields of a reply."""
        problems = []
        if reply.status != status:
            problems.append(f"status {reply.status} != {status}")
        if isinstance(reply.body, dict) and "success" in reply.body:
            if reply.body["success"] is not (status < 400):
                problems.append(f"success {reply.body['success']!r}")
        elif status != 204:
            problems.append("no JSON body with success")
        for key, want in fields.items():
            got = reply.get(*key.split("__"))
            if got != want:
                problems.append(f"{key.replace('__', '.')} {got!r} != {want!r}")
        detail = "; ".join(problems) + " | " + reply.brief() if problems else reply.brief()
        return self.check(name, not problems, detail)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """A crash inside a section is one failed row, and the run goes on (to clean up)."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            self.check(f"{name}: ran to the end", False, f"{type(exc).__name__}: {exc}")

    @property
    def failed(self) -> int:
        return sum(1 for _, result, _ in self.rows if result == "FAIL")

    def print_table(self, title: str, out: Any = sys.stdout) -> None:
        width = max([len(n) for n, _, _ in self.rows] + [5])
        print(f"\n{title}", file=out)
        print(f"{'check'.ljust(width)}  {'ok'.ljust(4)}  detail", file=out)
        print(f"{'-' * width}  ----  {'-' * 40}", file=out)
        for name, result, detail in self.rows:
            print(f"{name.ljust(width)}  {result.ljust(4)}  {detail[:120]}", file=out)
        skipped = sum(1 for _, result, _ in self.rows if result == "skip")
        print(f"\n{len(self.rows) - self.failed - skipped} ok, {self.failed} failed, "
              f"{skipped} skipped", file=out)


# -- shared helpers (also used by test_swap_and_mobile_money.py) --------------------------------


def new_run_id() -> str:
    return f"doc{time.strftime('%m%d%H%M%S')}{uuid.uuid4().hex[:6]}"


def doc_status(locked: Decimal, total: Decimal) -> str:
    """The document's status calculation, exactly (no rounded percentage)."""
    if total <= 0:
        return "healthy"
    for name, level in THRESHOLDS:
        if locked * 100 >= level * total:
            return name
    return "healthy"


def reserve_of(client: Client, currency: str, account_type: str) -> dict[str, Any]:
    reply = client.get(f"/wallet/reserves/{currency}/{account_type}/balance")
    if reply.status != 200 or not isinstance(reply.get("reserve"), dict):
        raise RuntimeError(f"balance of {currency}/{account_type}: {reply.brief()}")
    reserve: dict[str, Any] = reply.body["reserve"]
    return reserve


def snapshot(client: Client, reserves: list[tuple[str, str]]) -> dict[str, tuple[Decimal, Decimal]]:
    """(total, locked) of each reserve."""
    out = {}
    for currency, account_type in reserves:
        r = reserve_of(client, currency, account_type)
        out[f"{currency}/{account_type}"] = (r["total_balance"], r["locked_balance"])
    return out


def restore_totals(client: Client, checks: Checks, run_id: str,
                   before: dict[str, tuple[Decimal, Decimal]]) -> None:
    """Withdraw (or top up) each reserve's difference from its first reading, then compare."""
    for key, (total0, locked0) in before.items():
        currency, account_type = key.split("/")
        with checks.section(f"restore {key}"):
            total = reserve_of(client, currency, account_type)["total_balance"]
            delta = total - total0
            base = f"/wallet/reserves/{currency}/{account_type}"
            if delta > 0:
                reply = client.post(f"{base}/withdraw", {
                    "amount": delta, "destination_reference": f"{run_id}_restore_{currency}"})
                checks.reply(f"restore {key}: withdraw what the run added", reply, 200,
                             withdrawn_amount=delta)
            elif delta < 0:
                reply = client.post(f"{base}/topup", {
                    "amount": -delta, "source_reference": f"{run_id}_restore_{currency}"})
                checks.reply(f"restore {key}: top up what the run took", reply, 200,
                             topped_up_amount=-delta)
    after = snapshot(client, [tuple(k.split("/")) for k in before])  # type: ignore[misc]
    for key, (total0, locked0) in before.items():
        total1, locked1 = after[key]
        checks.check(f"{key}: total and locked as before the run", (total1, locked1) == (
            total0, locked0), f"before total={total0} locked={locked0}, after total={total1} "
                              f"locked={locked1}")


def minor_unit(client: Client, currency: str, account_type: str) -> Decimal:
    """The currency's smallest unit, learned from the check endpoint's refusal of a finer one."""
    for places in range(0, 19):
        probe = Decimal(1).scaleb(-places - 1)
        reply = client.post(f"/wallet/reserves/{currency}/{account_type}/check",
                            {"amount": probe}, token="service")
        if reply.status == 400:
            return Decimal(1).scaleb(-places)
    return Decimal(1).scaleb(-18)


def common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("RESERVES_URL", DEFAULT_URL),
                        help=f"base URL of the service (default {DEFAULT_URL}, or RESERVES_URL)")
    parser.add_argument("--token", default=os.environ.get("RESERVES_ADMIN_TOKEN", ""),
                        help="admin bearer token (default: RESERVES_ADMIN_TOKEN)")
    parser.add_argument("--service-token", default=os.environ.get("RESERVES_SERVICE_TOKEN", ""),
                        help="service bearer token (default: RESERVES_SERVICE_TOKEN, else the "
                             "admin token, which may do everything the service role may)")
    parser.add_argument("--crypto", default="USDT", help="crypto reserve to use (default USDT)")
    parser.add_argument("--fiat", default="UGX", help="fiat reserve to use (default UGX)")


def client_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Client:
    if not args.token:
        parser.error("an admin token is needed: --token or RESERVES_ADMIN_TOKEN")
    return Client(args.url, args.token, args.service_token or args.token)


# -- the checks ---------------------------------------------------------------------------------


class ReserveSystemRun:
    def __init__(self, client: Client, crypto: str, fiat: str, exercise_levels: bool) -> None:
        self.c = client
        self.checks = Checks()
        self.run_id = new_run_id()
        self.crypto = crypto
        self.fiat = fiat
        self.exercise_levels = exercise_levels
        self.open_holds: list[str] = []

    def ref(self, name: str) -> str:
        return f"{self.run_id}_{name}"

    def base(self, currency: str, account_type: str) -> str:
        return f"/wallet/reserves/{currency}/{account_type}"

    def run(self) -> Checks:
        ck = self.checks
        reserves = [(self.crypto, "crypto"), (self.fiat, "fiat")]
        health = self.c.get("/health", token=None)
        if not ck.check("GET /health answers 200", health.status == 200, health.brief()):
            return ck
        try:
            before = snapshot(self.c, reserves)
        except RuntimeError as exc:  # e.g. a wrong token: nothing else can run
            ck.check("first reading of the reserves", False, exc)
            return ck
        ck.check("first reading of the reserves", True,
                 "; ".join(f"{k} total={t} locked={l}" for k, (t, l) in before.items()))
        self.counts0 = self.operation_counts()
        try:
            with ck.section("auth"):
                self.auth()
            with ck.section("status"):
                self.status()
            for currency, account_type in reserves:
                with ck.section(f"balance {currency}"):
                    self.balance(currency, account_type)
            with ck.section("operations"):
                self.operations(self.crypto, "crypto", D("1000.0"), D("250.0"))
            with ck.section("operations fiat"):
                self.operations(self.fiat, "fiat", D("5000000"), D("1250000"))
            with ck.section("errors"):
                self.errors(self.crypto, "crypto")
            if self.exercise_levels:
                with ck.section("levels"):
                    self.levels(self.crypto, "crypto")
            with ck.section("analytics"):
                self.analytics()
            with ck.section("cache clear"):
                self.cache_clear()
        finally:
            for ref in list(self.open_holds):
                self.c.post(f"/wallet/reserves/holds/{ref}/release", token="service")
            restore_totals(self.c, ck, self.run_id, before)
        return ck

    # -- sections ----------------------------------------------------------------------------

    def auth(self) -> None:
        ck, path = self.checks, "/wallet/reserves/status"
        no = self.c.get(path, token=None)
        ck.reply("no token: 401", no, 401, code="unauthorized")
        ck.equal("no token: WWW-Authenticate Bearer", no.headers.get("www-authenticate"),
                 "Bearer")
        bad = self.c.get(path, token=f"bad-{self.run_id}")
        ck.reply("bad token: 401", bad, 401, code="unauthorized", error="invalid token")
        bad_topup = self.c.post(f"{self.base(self.crypto, 'crypto')}/topup",
                                {"amount": D("1"), "source_reference": self.ref("badtok")},
                                token=f"bad-{self.run_id}")
        ck.reply("bad token on a top-up: 401", bad_topup, 401, code="unauthorized")
        if self.c.service_token != self.c.admin_token:
            for method, route in (("GET", path), ("POST", "/wallet/reserves/cache/clear"),
                                  ("POST", f"{self.base(self.crypto, 'crypto')}/topup")):
                body = {"amount": D("1"), "source_reference": self.ref("svc")} if "topup" in \
                    route else None
                reply = self.c.request(method, route, body, token="service")
                ck.reply(f"service token on admin {method} {route}: 403", reply, 403,
                         code="forbidden")
        else:
            ck.skip("service token on admin routes: 403", "no separate --service-token")

    def status(self) -> None:
        ck = self.checks
        reply = self.c.get("/wallet/reserves/status")
        ck.reply("GET /wallet/reserves/status", reply, 200)
        reserves = reply.get("reserves") or {}
        ck.check("status has crypto, fiat and summary", all(
            k in reserves for k in ("crypto", "fiat", "summary")), sorted(reserves))
        summary = reserves.get("summary") or {}
        ck.check("summary has overall_status, critical_reserves, warning_reserves",
                 all(k in summary for k in ("overall_status", "critical_reserves",
                                            "warning_reserves")), summary)
        worst, critical, warning = "healthy", [], []
        order = ["healthy", "moderate", "warning", "critical"]
        problems = []
        for account_type in ("crypto", "fiat"):
            for code, r in (reserves.get(account_type) or {}).items():
                missing = [k for k in DOC_RESERVE_KEYS if k not in r]
                if missing:
                    problems.append(f"{code} lacks {missing}")
                    continue
                if r["account_type"] != account_type or r["currency"] != code:
                    problems.append(f"{code} filed under {account_type}")
                if r["available_balance"] != r["total_balance"] - r["locked_balance"]:
                    problems.append(f"{code} available != total - locked")
                if r["status"] != doc_status(r["locked_balance"], r["total_balance"]):
                    problems.append(f"{code} status {r['status']} != document's formula")
                if r["status"] == "critical":
                    critical.append(code)
                elif r["status"] == "warning":
                    warning.append(code)
                if order.index(r["status"]) > order.index(worst):
                    worst = r["status"]
        ck.check("every reserve: document's fields, available = total - locked, status by "
                 "the document's thresholds", not problems, "; ".join(problems) or "all agree")
        ck.check(f"{self.crypto} listed under crypto, {self.fiat} under fiat",
                 self.crypto in (reserves.get("crypto") or {})
                 and self.fiat in (reserves.get("fiat") or {}), "")
        ck.equal("summary.overall_status is the worst status", summary.get("overall_status"),
                 worst)
        ck.equal("summary lists the critical and warning reserves",
                 (sorted(summary.get("critical_reserves") or []),
                  sorted(summary.get("warning_reserves") or [])),
                 (sorted(critical), sorted(warning)))

    def balance(self, currency: str, account_type: str) -> None:
        ck = self.checks
        reply = self.c.get(f"{self.base(currency, account_type)}/balance")
        ck.reply(f"GET {currency}/{account_type}/balance", reply, 200)
        r = reply.get("reserve") or {}
        ck.check(f"{currency} balance has the document's fields",
                 all(k in r for k in DOC_RESERVE_KEYS), sorted(r))
        ck.equal(f"{currency} account_number label", str(r.get("account_number", ""))[:1 + len(
            currency)], f"R{currency}")
        lower = self.c.get(f"/wallet/reserves/{currency.lower()}/{account_type.upper()}/balance")
        ck.reply(f"{currency.lower()}/{account_type.upper()}: case-insensitive", lower, 200,
                 reserve__currency=currency)

    def operations(self, currency: str, account_type: str, top_up: Decimal,
                   hold: Decimal) -> None:
        """Top-up, check, reserve, repeat, hold, commit, release, withdraw: exact figures."""
        ck, base, cur = self.checks, self.base(currency, account_type), currency
        start = reserve_of(self.c, currency, account_type)
        total0, locked0 = start["total_balance"], start["locked_balance"]

        ref = self.ref(f"topup_{cur}")
        reply = self.c.post(f"{base}/topup", {"amount": top_up, "source_reference": ref})
        ck.reply(f"{cur} top-up {top_up} (document's body)", reply, 200,
                 topped_up_amount=top_up, new_total_balance=total0 + top_up)
        ck.check(f"{cur} top-up has a transaction_id", isinstance(
            reply.get("transaction_id"), int), reply.get("transaction_id"))
        again = self.c.post(f"{base}/topup", {"amount": top_up, "source_reference": ref})
        ck.reply(f"{cur} same top-up again: answered, applied once", again, 200,
                 topped_up_amount=top_up, new_total_balance=total0 + top_up)
        other = self.c.post(f"{base}/topup", {"amount": top_up + 1, "source_reference": ref})
        ck.reply(f"{cur} same source_reference, other amount: 409", other, 409,
                 code="reference_conflict")
        total = total0 + top_up
        ck.equal(f"{cur} total after the top-up",
                 reserve_of(self.c, currency, account_type)["total_balance"], total)

        available = total - locked0
        check = self.c.post(f"{base}/check", {"amount": hold, "operation_type": "swap"},
                            token="service")
        ck.reply(f"{cur} check {hold}: sufficient", check, 200, is_sufficient=True,
                 required_amount=hold, available_amount=available)
        ck.check(f"{cur} check has the document's reserve_status fields",
                 all(k in (check.body or {}) for k in DOC_STATUS_KEYS), check.brief())

        ref = self.ref(f"hold_{cur}")
        reply = self.c.post(f"{base}/reserve", {"amount": hold, "reference_id": ref,
                                                "operation_type": "swap", "ttl_seconds": 300},
                            token="service")
        self.open_holds.append(ref)
        ck.reply(f"{cur} reserve {hold}", reply, 200, reference_id=ref, reserved_amount=hold,
                 locked_balance=locked0 + hold, available_balance=available - hold,
                 hold_state="pending", status=doc_status(locked0 + hold, total))
        again = self.c.post(f"{base}/reserve", {"amount": hold, "reference_id": ref,
                                                "operation_type": "swap", "ttl_seconds": 300},
                            token="service")
        ck.reply(f"{cur} same reserve again: the same hold, nothing more locked", again, 200,
                 reference_id=ref, reserved_amount=hold, locked_balance=locked0 + hold)
        other = self.c.post(f"{base}/reserve", {"amount": hold + 1, "reference_id": ref,
                                                "operation_type": "swap"}, token="service")
        ck.reply(f"{cur} same reference_id, other amount: 409", other, 409,
                 code="reference_conflict")
        got = self.c.get(f"/wallet/reserves/holds/{ref}", token="service")
        ck.reply(f"{cur} GET hold", got, 200, hold__state="pending", hold__amount=hold,
                 hold__currency=cur, hold__operation_type="swap")
        r = reserve_of(self.c, currency, account_type)
        ck.equal(f"{cur} balance shows the lock", (r["locked_balance"], r["available_balance"]),
                 (locked0 + hold, available - hold))
        status = self.c.get("/wallet/reserves/status")
        listed = status.get("reserves", account_type, currency) or {}
        ck.equal(f"{cur} status shows the lock at once (the cache follows changes)",
                 (listed.get("locked_balance"), listed.get("available_balance")),
                 (locked0 + hold, available - hold))

        # a second hold, committed in part: the commit takes money out (restored at the end)
        part = hold / 2
        ref2 = self.ref(f"commit_{cur}")
        reply = self.c.post(f"{base}/reserve", {"amount": hold, "reference_id": ref2,
                                                "operation_type": "swap"}, token="service")
        self.open_holds.append(ref2)
        ck.reply(f"{cur} second reserve {hold}", reply, 200, locked_balance=locked0 + 2 * hold)
        commit = self.c.post(f"/wallet/reserves/holds/{ref2}/commit", {"amount": part},
                             token="service")
        ck.reply(f"{cur} commit {part} of {hold}", commit, 200, hold_state="committed",
                 committed_amount=part, released_amount=hold - part,
                 locked_balance=locked0 + hold)
        self.open_holds.remove(ref2)
        total -= part
        again = self.c.post(f"/wallet/reserves/holds/{ref2}/commit", {"amount": part},
                            token="service")
        ck.reply(f"{cur} commit again: answered as before", again, 200,
                 hold_state="committed", committed_amount=part)
        rel = self.c.post(f"/wallet/reserves/holds/{ref2}/release", token="service")
        ck.reply(f"{cur} release of a committed hold: 409", rel, 409,
                 code="hold_already_committed")

        rel = self.c.post(f"/wallet/reserves/holds/{ref}/release", token="service")
        ck.reply(f"{cur} release {hold}", rel, 200, hold_state="released",
                 released_amount=hold, locked_balance=locked0)
        self.open_holds.remove(ref)
        again = self.c.post(f"/wallet/reserves/holds/{ref}/release", token="service")
        ck.reply(f"{cur} release again: answered as before", again, 200, hold_state="released")
        late = self.c.post(f"/wallet/reserves/holds/{ref}/commit", token="service")
        ck.reply(f"{cur} commit of a released hold: 409", late, 409,
                 code="hold_already_released")

        out = hold
        ref = self.ref(f"withdraw_{cur}")
        reply = self.c.post(f"{base}/withdraw", {"amount": out, "destination_reference": ref})
        ck.reply(f"{cur} withdraw {out} (document's body)", reply, 200, withdrawn_amount=out,
                 new_total_balance=total - out)
        again = self.c.post(f"{base}/withdraw", {"amount": out, "destination_reference": ref})
        ck.reply(f"{cur} same withdrawal again: applied once", again, 200,
                 withdrawn_amount=out, new_total_balance=total - out)
        total -= out
        r = reserve_of(self.c, currency, account_type)
        ck.equal(f"{cur} balance after top-up, commit and withdrawal",
                 (r["total_balance"], r["locked_balance"]), (total, locked0))

    def errors(self, currency: str, account_type: str) -> None:
        """The Error Handling section: every refusal is JSON and changes nothing."""
        ck, base, cur = self.checks, self.base(currency, account_type), currency
        top = self.c.post(f"{base}/topup", {"amount": D("100"),
                                            "source_reference": self.ref(f"errs_{cur}")})
        ck.reply(f"{cur} top-up 100 for the error cases", top, 200)
        r0 = reserve_of(self.c, currency, account_type)
        available = r0["available_balance"]
        unit = minor_unit(self.c, currency, account_type)
        ck.check(f"{cur} smallest unit", unit > 0, unit)
        over = available + unit
        want_error = f"Insufficient reserve balance. Required: {num(over)}, Available: " \
                     f"{num(available)}"
        want_status = {"is_sufficient": False, "required_amount": over,
                       "available_amount": available,
                       "utilization_percentage": r0["utilization_percentage"],
                       "status": r0["status"]}
        refusal = self.c.post(f"{base}/reserve", {"amount": over, "reference_id": self.ref(
            f"over_{cur}"), "operation_type": "swap"}, token="service")
        ck.reply(f"{cur} reserve more than available: 409 with reserve_status", refusal, 409,
                 error=want_error, code="exceeds_available", reserve_status=want_status)
        withdraw = self.c.post(f"{base}/withdraw", {"amount": over, "destination_reference":
                                                    self.ref(f"over_{cur}")})
        ck.reply(f"{cur} withdraw more than available: 409 with reserve_status", withdraw, 409,
                 error=want_error, code="exceeds_available", reserve_status=want_status)
        check = self.c.post(f"{base}/check", {"amount": over}, token="service")
        ck.reply(f"{cur} check more than available: is_sufficient false", check, 200,
                 is_sufficient=False, required_amount=over, available_amount=available)

        too_fine = unit / 10
        hold_body = {"reference_id": self.ref("bad"), "operation_type": "swap"}
        bad_amounts: list[tuple[str, Any, str]] = [
            ("zero", D("0"), "amount must be greater than zero"),
            ("negative", D("-5.0"), "amount must be greater than zero"),
            ("not a number", "abc", "amount must be a number, got 'abc'"),
            ("more decimals than the currency", too_fine,
             f"has more than {-unit.as_tuple().exponent} decimal places"),
            ("missing", None, "amount"),
            ("true", True, "amount must be a number"),
        ]
        routes = (("reserve", "service", hold_body),
                  ("topup", "admin", {"source_reference": self.ref("bad")}),
                  ("withdraw", "admin", {"destination_reference": self.ref("bad")}))
        for label, amount, message in bad_amounts:
            for route, tok, fields in routes:
                payload = dict(fields) if amount is None else {**fields, "amount": amount}
                reply = self.c.post(f"{base}/{route}", payload, token=tok)
                ok = reply.status == 400 and reply.get("success") is False and message in str(
                    reply.get("error"))
                ck.check(f"{cur} {route} amount {label}: 400", ok, reply.brief())
        nan = self.c.post(f"{base}/topup", raw=b'{"amount": NaN, "source_reference": "x"}')
        ck.reply(f"{cur} top-up amount NaN: 400", nan, 400)
        malformed = self.c.post(f"{base}/topup", raw=b'{"amount": 1000.0,')
        ck.reply(f"{cur} malformed JSON: 400", malformed, 400)
        no_ref = self.c.post(f"{base}/topup", {"amount": D("1")})
        ck.reply(f"{cur} top-up without source_reference: 400", no_ref, 400)
        bad_ref = self.c.post(f"{base}/topup", {"amount": D("1"), "source_reference": "a b"})
        ck.reply(f"{cur} top-up with a bad reference: 400", bad_ref, 400,
                 code="invalid_reference")
        big = self.c.post(f"{base}/topup", raw=b'{"amount": 1, "source_reference": "' +
                          b"x" * 20000 + b'"}')
        ck.reply(f"{cur} body over 16 KiB: 413", big, 413, code="body_too_large")

        for path, code in ((f"/wallet/reserves/XYZ{self.run_id[-4:]}/crypto/balance",
                            "unknown_currency"),
                           (f"/wallet/reserves/{cur}/stock/balance", "unknown_account_type"),
                           (f"/wallet/reserves/{cur}/"
                            f"{'fiat' if account_type == 'crypto' else 'crypto'}/balance",
                            "account_type_mismatch")):
            ck.reply(f"GET {path}: 404 {code}", self.c.get(path), 404, code=code)
        unknown = self.c.post(f"/wallet/reserves/XYZ{self.run_id[-4:]}/crypto/topup",
                              {"amount": D("1"), "source_reference": self.ref("unk")})
        ck.reply("top-up of an unknown currency: 404", unknown, 404, code="unknown_currency")
        unknown = self.c.post(f"/wallet/reserves/XYZ{self.run_id[-4:]}/crypto/reserve",
                              {**hold_body, "amount": D("1")}, token="service")
        ck.reply("reserve on an unknown currency: 404", unknown, 404, code="unknown_currency")
        missing = self.c.get(f"/wallet/reserves/holds/{self.ref('nohold')}", token="service")
        ck.reply("GET an unknown hold: 404", missing, 404, code="hold_not_found")
        missing = self.c.post(f"/wallet/reserves/holds/{self.ref('nohold')}/release",
                              token="service")
        ck.reply("release an unknown hold: 404", missing, 404, code="hold_not_found")
        missing = self.c.post(f"/wallet/reserves/holds/{self.ref('nohold')}/commit",
                              token="service")
        ck.reply("commit an unknown hold: 404", missing, 404, code="hold_not_found")
        r1 = reserve_of(self.c, currency, account_type)
        ck.equal(f"{cur} every refusal changed nothing",
                 (r1["total_balance"], r1["locked_balance"]),
                 (r0["total_balance"], r0["locked_balance"]))

    def levels(self, currency: str, account_type: str) -> None:
        """Lock the reserve through moderate, warning and critical, then release (alerts fire)."""
        ck, base = self.checks, self.base(currency, account_type)
        r = reserve_of(self.c, currency, account_type)
        total, locked = r["total_balance"], r["locked_balance"]
        unit = minor_unit(self.c, currency, account_type)
        for name, level in sorted(THRESHOLDS, key=lambda t: t[1]):
            target = (total * level / 100 / unit).to_integral_value(ROUND_CEILING) * unit
            need = target - locked
            if need <= 0:
                ck.check(f"{currency} at {level} %: {name}", r["status"] == doc_status(
                    locked, total), f"already locked {locked} of {total}")
                continue
            ref = self.ref(f"lvl{level}")
            reply = self.c.post(f"{base}/reserve", {"amount": need, "reference_id": ref,
                                                    "operation_type": "level_check"},
                                token="service")
            self.open_holds.append(ref)
            locked += need
            ck.reply(f"{currency} locked {level} % of total: {name}", reply, 200, status=name,
                     locked_balance=locked)
            status = self.c.get("/wallet/reserves/status")
            listed = status.get("reserves", "summary", f"{name}_reserves")
            if name in ("warning", "critical"):
                ck.check(f"status summary lists {currency} as {name}",
                         currency in (listed or []), status.get("reserves", "summary"))
        for ref in [h for h in self.open_holds if "_lvl" in h]:
            reply = self.c.post(f"/wallet/reserves/holds/{ref}/release", token="service")
            ck.reply(f"release {ref}", reply, 200, hold_state="released")
            self.open_holds.remove(ref)
        r = reserve_of(self.c, currency, account_type)
        ck.equal(f"{currency} back to its status", r["status"],
                 doc_status(r["locked_balance"], r["total_balance"]))

    def operation_counts(self) -> dict[str, int]:
        reply = self.c.get("/wallet/reserves/analytics?period_days=30")
        by_currency = reply.get("analytics", "by_currency") or {}
        counts: dict[str, int] = (by_currency.get(self.crypto) or {}).get("operations") or {}
        return counts

    def analytics(self) -> None:
        """The run's operations reach the analytics once the persister wrote them."""
        ck = self.checks
        kinds = ("reserve_topup", "reserve_lock", "reserve_release", "reserve_withdrawal")
        deadline = time.monotonic() + PERSIST_WAIT_S
        while True:
            reply = self.c.get("/wallet/reserves/analytics?period_days=30")
            a = reply.get("analytics") or {}
            ops = ((a.get("by_currency") or {}).get(self.crypto) or {}).get("operations") or {}
            grown = all(ops.get(k, 0) > self.counts0.get(k, 0) for k in kinds)
            if grown or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        ck.reply("GET /wallet/reserves/analytics?period_days=30", reply, 200,
                 analytics__period_days=30)
        ck.check("analytics has the document's fields", all(k in a for k in (
            "period_days", "total_transactions", "by_operation", "by_currency")), sorted(a))
        cur = (a.get("by_currency") or {}).get(self.crypto) or {}
        ck.check(f"analytics by_currency.{self.crypto} has total_volume, transaction_count, "
                 "operations", all(k in cur for k in ("total_volume", "transaction_count",
                                                      "operations")), sorted(cur))
        ck.check(f"analytics counts this run's {self.crypto} top-ups, locks, releases and "
                 "withdrawals (the persister wrote them)", grown,
                 f"before {self.counts0}, after {ops}" + ("" if grown else
                                                          ": is a persister running?"))
        by_op = a.get("by_operation") or {}
        ck.equal("total_transactions = sum of by_operation", a.get("total_transactions"),
                 sum(by_op.values()))
        week = self.c.get("/wallet/reserves/analytics?period_days=7")
        ck.reply("analytics?period_days=7", week, 200, analytics__period_days=7)
        bad = self.c.get("/wallet/reserves/analytics?period_days=abc")
        ck.reply("analytics?period_days=abc: 400", bad, 400)

    def cache_clear(self) -> None:
        ck = self.checks
        reply = self.c.post("/wallet/reserves/cache/clear")
        ck.reply("POST /wallet/reserves/cache/clear", reply, 200)
        status = self.c.get("/wallet/reserves/status")
        ck.reply("status after the cache clear", status, 200)


def num(value: Decimal) -> str:
    """A Decimal as the service writes it in messages: 1000.0, 0.5, 0.000001."""
    if value == value.to_integral_value():
        return f"{value.quantize(Decimal(1)):f}.0"
    return f"{value.normalize():f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the design document's reserve checks against a live reserves "
                    "service; print a table of checks; exit 1 if any failed. Leaves the "
                    "reserves as it found them.")
    common_args(parser)
    parser.add_argument("--exercise-levels", action="store_true",
                        help="also lock the crypto reserve up to moderate, warning and critical "
                             "and release it again (raises and clears real alerts)")
    args = parser.parse_args(argv)
    client = client_from(args, parser)
    checks = ReserveSystemRun(client, args.crypto.upper(), args.fiat.upper(),
                              args.exercise_levels).run()
    checks.print_table(f"Reserve management system checks against {client.url}")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())

