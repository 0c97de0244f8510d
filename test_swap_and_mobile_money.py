#!/usr/bin/env python3
"""The design document's swap and mobile-money checks, run against a live `reserves serve`.

    python test_swap_and_mobile_money.py [--url http://127.0.0.1:3000] [--token ADMIN]
        [--service-token SERVICE] [--callback-secret SECRET] [--refused-phone PHONE]

Swaps (quotes, both reserves held then settled, repeats, refusals of either reserve leg and of
the user's funds) and mobile money (buy and sell, each completed and failed by the provider's
signed callback, bad signatures, duplicates, a provider refusal), with exact figures for every
reserve and the user's wallets. One row per check; exit status 1 if any check failed.

The callbacks are signed like the provider's: HMAC-SHA256 of the raw body with the shared
secret (`--callback-secret` or RESERVES_MOBILE_MONEY_SECRET, the server's setting), hex in
X-Signature. Without a secret the buy and sell flows are skipped (shown as `skip`): nothing
could end them but their 15-minute expiry. The server's simulated provider must be in its
default `manual` mode (RESERVES_MOBILE_MONEY_SIMULATE unset), so the callbacks are the script's.
`--refused-phone` names a number the provider refuses (RESERVES_MOBILE_MONEY_REFUSE), to check
the 502 path.

It leaves the reserves as it found them: each reserve's total and locked balance is read first,
and what the run's swaps, settlements and top-ups changed is withdrawn or topped up again. The
run's user (`<run id>_u`, its own per run) keeps what its swaps and buys gave it.

Standard library only; the shared client is in test_reserve_system.py next to this file.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import sys
import time
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_reserve_system import (  # noqa: E402 - the sibling script, wherever it is run from
    Checks,
    Client,
    D,
    Reply,
    client_from,
    common_args,
    minor_unit,
    new_run_id,
    num,
    reserve_of,
    restore_totals,
    snapshot,
)

DEFAULT_PHONE = "+256700000001"


def sign(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


class FlowsRun:
    def __init__(self, client: Client, crypto: str, fiat: str, secret: str, phone: str,
                 refused_phone: str) -> None:
        self.c = client
        self.checks = Checks()
        self.run_id = new_run_id()
        self.user = f"{self.run_id}_u"
        self.crypto = crypto
        self.fiat = fiat
        self.secret = secret.encode()
        self.phone = phone
        self.refused_phone = refused_phone
        self.units: dict[str, Decimal] = {}

    def ref(self, name: str) -> str:
        return f"{self.run_id}_{name}"

    def run(self) -> Checks:
        ck = self.checks
        health = self.c.get("/health", token=None)
        if not ck.check("GET /health answers 200", health.status == 200, health.brief()):
            return ck
        reserves = [(self.crypto, "crypto"), (self.fiat, "fiat")]
        try:
            before = snapshot(self.c, reserves)
        except RuntimeError as exc:  # e.g. a wrong token: nothing else can run
            ck.check("first reading of the reserves", False, exc)
            return ck
        ck.check("first reading of the reserves", True,
                 "; ".join(f"{k} total={t} locked={l}" for k, (t, l) in before.items()))
        self.units = {self.crypto: minor_unit(self.c, self.crypto, "crypto"),
                      self.fiat: minor_unit(self.c, self.fiat, "fiat")}
        try:
            with ck.section("liquidity"):
                for currency, account_type, amount in ((self.crypto, "crypto", D("100")),
                                                       (self.fiat, "fiat", D("1000000"))):
                    reply = self.c.post(f"/wallet/reserves/{currency}/{account_type}/topup", {
                        "amount": amount, "source_reference": self.ref(f"liq_{currency}")})
                    ck.reply(f"top up {currency} {amount} for the flows", reply, 200)
            with ck.section("user"):
                self.user_wallet()
            with ck.section("quotes"):
                self.quotes()
            with ck.section("swaps"):
                self.swaps()
            with ck.section("swap refusals"):
                self.swap_refusals()
            if self.secret:
                with ck.section("buy"):
                    self.buy()
                with ck.section("sell"):
                    self.sell()
                with ck.section("callbacks"):
                    self.callback_refusals()
            else:
                ck.skip("mobile-money buy and sell", "no --callback-secret / "
                        "RESERVES_MOBILE_MONEY_SECRET: nothing could end them")
            with ck.section("mobile-money refusals"):
                self.mobile_money_refusals()
        finally:
            restore_totals(self.c, ck, self.run_id, before)
        return ck

    # -- helpers ------------------------------------------------------------------------------

    def reserve(self, currency: str) -> tuple[Decimal, Decimal]:
        kind = "crypto" if currency == self.crypto else "fiat"
        r = reserve_of(self.c, currency, kind)
        return r["total_balance"], r["locked_balance"]

    def wallet(self, user: str | None = None) -> dict[str, tuple[Decimal, Decimal]]:
        reply = self.c.get(f"/wallet/users/{user or self.user}/balances", token="service")
        return {code: (b["total_balance"], b["locked_balance"])
                for code, b in (reply.get("balances") or {}).items()}

    def convert(self, amount: Decimal, quote: dict[str, Any], target: str) -> Decimal:
        """The quote's conversion: amount * rate * (1 - spread), down to the target's unit."""
        unit = self.units[target]
        exact = amount * quote["rate"] * (1 - quote["spread"])
        return (exact / unit).to_integral_value(ROUND_DOWN) * unit

    def quote(self, source: str, target: str, amount: Decimal) -> dict[str, Any]:
        reply = self.c.get(f"/wallet/quotes?from={source}&to={target}&amount={amount}",
                           token="service")
        if reply.status != 200:
            raise RuntimeError(f"quote {source}->{target}: {reply.brief()}")
        quote: dict[str, Any] = reply.body["quote"]
        return quote

    def callback(self, reference_id: str, provider_tx_id: str, status: str,
                 signature: str | None = None) -> Reply:
        # the provider's send time: the service refuses a callback signed too long ago
        raw = (f'{{"provider_tx_id":"{provider_tx_id}","reference_id":"{reference_id}",'
               f'"status":"{status}","timestamp_ms":{time.time_ns() // 1_000_000}}}').encode()
        sig = sign(self.secret, raw) if signature is None else signature
        return self.c.post("/wallet/mobile-money/callback", raw=raw, token=None,
                           headers={"X-Signature": sig})

    def swap(self, ref: str, source: str, target: str, amount: Decimal, user: str | None = None,
             quote_id: str | None = None) -> Reply:
        body: dict[str, Any] = {"user_id": user or self.user, "from_currency": source,
                                "to_currency": target, "from_amount": amount,
                                "reference_id": ref}
        if quote_id is not None:
            body["quote_id"] = quote_id
        return self.c.post("/wallet/swaps", body, token="service")

    # -- sections -----------------------------------------------------------------------------

    def user_wallet(self) -> None:
        ck, ref = self.checks, self.ref("dep")
        path = f"/wallet/users/{self.user}/{self.crypto}/deposit"
        reply = self.c.post(path, {"amount": D("100"), "reference_id": ref}, token="service")
        ck.reply(f"deposit 100 {self.crypto} to the run's user", reply, 200,
                 deposited_amount=D("100"), new_total_balance=D("100"), applied=True)
        again = self.c.post(path, {"amount": D("100"), "reference_id": ref}, token="service")
        ck.reply("same deposit again: applied once", again, 200, new_total_balance=D("100"),
                 applied=False)
        ck.equal("user's balances", self.wallet(), {self.crypto: (D("100"), D("0"))})

    def quotes(self) -> None:
        ck, amount = self.checks, D("10")
        reply = self.c.get(f"/wallet/quotes?from={self.crypto}&to={self.fiat}&amount={amount}",
                           token="service")
        ck.reply(f"GET /wallet/quotes {self.crypto}->{self.fiat} {amount}", reply, 200,
                 quote__from_currency=self.crypto, quote__to_currency=self.fiat,
                 quote__from_amount=amount)
        q = reply.get("quote") or {}
        if "rate" in q:
            ck.equal("quote: to_amount = amount x rate x (1 - spread), rounded down",
                     q.get("to_amount"), self.convert(amount, q, self.fiat))
        for query, status, code in (
                (f"from={self.crypto}&to={self.fiat}", 400, None),
                (f"from={self.crypto}&to={self.crypto}&amount=1", 400, "same_currency"),
                (f"from={self.crypto}&to=XYZ{self.run_id[-3:]}&amount=1", 404,
                 "unknown_currency"),
                (f"from={self.crypto}&to={self.fiat}&amount=0", 400, None),
                (f"from={self.crypto}&to={self.fiat}&amount=abc", 400, None)):
            fields = {"code": code} if code else {}
            ck.reply(f"quote {query}: {status}", self.c.get(f"/wallet/quotes?{query}",
                                                             token="service"), status, **fields)

    def swaps(self) -> None:
        ck, amount = self.checks, D("10")
        q = self.quote(self.crypto, self.fiat, amount)
        c0, f0 = self.reserve(self.crypto), self.reserve(self.fiat)
        ref = self.ref("swap")
        reply = self.swap(ref, self.crypto, self.fiat, amount, quote_id=q["quote_id"])
        ck.reply(f"swap {amount} {self.crypto}->{self.fiat} at the quote", reply, 200,
                 swap__state="completed", swap__to_amount=q["to_amount"],
                 swap__quote_id=q["quote_id"], swap__error=None)
        # each leg shows its role; its reference is the engine's own (internal, not the caller's)
        legs = {leg["role"]: leg.get("state") for leg in reply.get("swap", "legs") or []}
        ck.equal("swap legs: from released, to and user committed", legs,
                 {"from": "released", "to": "committed", "user": "committed"})
        to_amount = q["to_amount"]
        ck.equal(f"{self.crypto} reserve credited {amount}, nothing left locked",
                 self.reserve(self.crypto), (c0[0] + amount, c0[1]))
        ck.equal(f"{self.fiat} reserve paid {to_amount}, nothing left locked",
                 self.reserve(self.fiat), (f0[0] - to_amount, f0[1]))
        ck.equal("user's wallets after the swap", self.wallet(),
                 {self.crypto: (D("90"), D("0")), self.fiat: (to_amount, D("0"))})
        again = self.swap(ref, self.crypto, self.fiat, amount, quote_id=q["quote_id"])
        ck.reply("same swap again: answered as before", again, 200, swap__state="completed",
                 swap__to_amount=to_amount)
        ck.equal("repeat moved nothing", (self.reserve(self.crypto), self.reserve(self.fiat)),
                 ((c0[0] + amount, c0[1]), (f0[0] - to_amount, f0[1])))
        got = self.c.get(f"/wallet/swaps/{ref}", token="service")
        ck.reply("GET /wallet/swaps/{reference_id}", got, 200, swap__state="completed",
                 swap__from_amount=amount, swap__to_amount=to_amount)
        other = self.swap(ref, self.crypto, self.fiat, amount + 1)
        ck.reply("same reference_id, other swap: 409", other, 409, code="reference_conflict")
        mismatch = self.swap(self.ref("swapqm"), self.crypto, self.fiat, amount + 1,
                             quote_id=q["quote_id"])
        ck.reply("swap naming a quote of another amount: 400", mismatch, 400,
                 code="quote_mismatch")

        back = (to_amount / 2).to_integral_value(ROUND_DOWN)
        qb = self.quote(self.fiat, self.crypto, back)
        c1, f1 = self.reserve(self.crypto), self.reserve(self.fiat)
        reply = self.swap(self.ref("swapback"), self.fiat, self.crypto, back)
        ck.reply(f"swap {back} {self.fiat}->{self.crypto} without a quote", reply, 200,
                 swap__state="completed", swap__to_amount=self.convert(back, qb, self.crypto),
                 swap__quote_id=None)
        got_back = reply.get("swap", "to_amount") or D(0)
        ck.equal("both reserves after the swap back",
                 (self.reserve(self.crypto), self.reserve(self.fiat)),
                 ((c1[0] - got_back, c1[1]), (f1[0] + back, f1[1])))
        ck.equal("user's wallets after the swap back", self.wallet(),
                 {self.crypto: (D("90") + got_back, D("0")),
                  self.fiat: (to_amount - back, D("0"))})

    def swap_refusals(self) -> None:
        """Each refusal: the seed's 409 body, the swap recorded as failed, nothing held."""
        ck = self.checks
        c0, f0 = self.reserve(self.crypto), self.reserve(self.fiat)
        wallet0 = self.wallet()
        unit = self.units[self.crypto]
        available = c0[0] - c0[1]
        over = available + unit
        ref = self.ref("swapfrom")
        reply = self.swap(ref, self.crypto, self.fiat, over)
        ck.reply("swap beyond the source reserve: 409, leg from", reply, 409,
                 code="exceeds_available", leg="from",
                 error=f"Insufficient reserve balance. Required: {num(over)}, "
                       f"Available: {num(available)}",
                 reserve_status__is_sufficient=False, reserve_status__required_amount=over,
                 reserve_status__available_amount=available)
        ck.reply("GET the refused swap: failed, with its error", self.c.get(
            f"/wallet/swaps/{ref}", token="service"), 200, swap__state="failed",
            swap__error__code="exceeds_available")
        again = self.swap(ref, self.crypto, self.fiat, over)
        ck.reply("the refused swap repeated: the same refusal", again, 409,
                 code="exceeds_available", leg="from")

        # the target leg: an amount whose conversion passes the fiat reserve's available
        q = self.quote(self.crypto, self.fiat, D("1"))
        fiat_available = f0[0] - f0[1]
        per_unit = q["rate"] * (1 - q["spread"])
        need = ((fiat_available + self.units[self.fiat]) / per_unit / unit).to_integral_value(
            ROUND_CEILING) * unit + unit
        extra = need - available
        if extra > 0:  # the source reserve must cover the source leg (restored at the end)
            top = self.c.post(f"/wallet/reserves/{self.crypto}/crypto/topup", {
                "amount": extra, "source_reference": self.ref("liq_to_leg")})
            ck.reply(f"top up {self.crypto} {extra} so only the target leg is short", top, 200)
        q = self.quote(self.crypto, self.fiat, need)
        reply = self.swap(self.ref("swapto"), self.crypto, self.fiat, need)
        ck.reply("swap beyond the target reserve: 409, leg to", reply, 409,
                 code="exceeds_available", leg="to",
                 error=f"Insufficient reserve balance. Required: {num(q['to_amount'])}, "
                       f"Available: {num(fiat_available)}",
                 reserve_status__available_amount=fiat_available)

        reply = self.swap(self.ref("swapfunds"), self.crypto, self.fiat, D("1"),
                          user=f"{self.run_id}_empty")
        ck.reply("swap beyond the user's funds: 409 insufficient_funds", reply, 409,
                 code="insufficient_funds", required_amount=D("1"), available_amount=D("0"))
        for label, body_amount, source, target, status, code in (
                ("zero amount", D("0"), self.crypto, self.fiat, 400, None),
                ("more decimals than the currency", unit / 10, self.crypto, self.fiat, 400,
                 None),
                ("unknown currency", D("1"), f"XYZ{self.run_id[-3:]}", self.fiat, 404,
                 "unknown_currency"),
                ("same currency", D("1"), self.crypto, self.crypto, 400, "same_currency")):
            fields = {"code": code} if code else {}
            ck.reply(f"swap with {label}: {status}", self.swap(
                self.ref(f"sbad{status}{len(label)}"), source, target, body_amount), status,
                **fields)
        missing = self.c.post("/wallet/swaps", {"user_id": self.user}, token="service")
        ck.reply("swap without its fields: 400", missing, 400)
        ck.reply("GET an unknown swap: 404", self.c.get(f"/wallet/swaps/{self.ref('noswap')}",
                                                        token="service"), 404,
                 code="swap_not_found")
        c1 = self.reserve(self.crypto)
        ck.equal("refused swaps held nothing and moved nothing",
                 (c1[1], self.reserve(self.fiat), self.wallet()),
                 (c0[1], f0, wallet0))

    def start(self, direction: str, ref: str, amount: Decimal,
              phone: str | None = None) -> Reply:
        body: dict[str, Any] = {"user_id": self.user, "fiat_currency": self.fiat,
                                "crypto_currency": self.crypto, "phone_number":
                                    phone or self.phone, "reference_id": ref}
        body["fiat_amount" if direction == "buy" else "crypto_amount"] = amount
        return self.c.post(f"/wallet/mobile-money/{direction}", body, token="service")

    def buy(self) -> None:
        """Fiat collected by mobile money, crypto from the reserve: success, then failure."""
        ck, fiat_amount = self.checks, D("37000")
        q = self.quote(self.fiat, self.crypto, fiat_amount)
        crypto_amount = self.convert(fiat_amount, q, self.crypto)
        c0, f0, w0 = self.reserve(self.crypto), self.reserve(self.fiat), self.wallet()
        ref = self.ref("buy")
        reply = self.start("buy", ref, fiat_amount)
        ck.reply(f"buy {fiat_amount} {self.fiat} of {self.crypto}: pending", reply, 200,
                 operation__state="pending", operation__direction="buy",
                 operation__crypto_amount=crypto_amount, operation__fiat_amount=fiat_amount)
        tx = reply.get("operation", "provider_tx_id") or ""
        ck.equal(f"buy holds {crypto_amount} of the {self.crypto} reserve",
                 self.reserve(self.crypto), (c0[0], c0[1] + crypto_amount))
        again = self.start("buy", ref, fiat_amount)
        ck.reply("same buy again: the same operation", again, 200, operation__state="pending",
                 operation__provider_tx_id=tx)
        ck.reply("GET /wallet/mobile-money/{reference_id}: pending", self.c.get(
            f"/wallet/mobile-money/{ref}", token="service"), 200, operation__state="pending")
        unsigned = self.c.post("/wallet/mobile-money/callback", raw=(
            f'{{"provider_tx_id":"{tx}","reference_id":"{ref}","status":"success"}}').encode(),
            token=None)
        ck.reply("callback without a signature: 401", unsigned, 401, code="bad_signature")
        forged = self.callback(ref, tx, "success", signature=sign(b"not-the-secret", b"x"))
        ck.reply("callback with a wrong signature: 401", forged, 401, code="bad_signature")
        ck.equal("bad callbacks changed nothing", self.reserve(self.crypto),
                 (c0[0], c0[1] + crypto_amount))
        done = self.callback(ref, tx, "success")
        ck.reply("signed success callback: completed", done, 200, duplicate_callback=False,
                 operation__state="completed", operation__outcome="success")
        dup = self.callback(ref, tx, "success")
        ck.reply("the callback again: duplicate_callback", dup, 200, duplicate_callback=True,
                 operation__state="completed")
        late = self.callback(ref, tx, "failed")
        ck.reply("a contrary callback after it: the first one decided", late, 200,
                 duplicate_callback=True, operation__state="completed")
        ck.equal(f"{self.crypto} reserve paid {crypto_amount}, nothing left locked",
                 self.reserve(self.crypto), (c0[0] - crypto_amount, c0[1]))
        ck.equal(f"{self.fiat} reserve received the {fiat_amount} collected",
                 self.reserve(self.fiat), (f0[0] + fiat_amount, f0[1]))
        ck.equal(f"user received {crypto_amount} {self.crypto}", self.wallet()[self.crypto],
                 (w0[self.crypto][0] + crypto_amount, D("0")))

        c1, f1, w1 = self.reserve(self.crypto), self.reserve(self.fiat), self.wallet()
        ref = self.ref("buyfail")
        reply = self.start("buy", ref, fiat_amount)
        ck.reply("second buy: pending", reply, 200, operation__state="pending")
        failed = self.callback(ref, reply.get("operation", "provider_tx_id") or "", "failed")
        ck.reply("signed failed callback: failed, holds released", failed, 200,
                 operation__state="failed", operation__outcome="failed")
        ck.equal("failed buy moved nothing",
                 (self.reserve(self.crypto), self.reserve(self.fiat), self.wallet()),
                 (c1, f1, w1))

    def sell(self) -> None:
        """Crypto from the user's wallet, fiat paid out by mobile money: success, failure."""
        ck, crypto_amount = self.checks, D("5")
        q = self.quote(self.crypto, self.fiat, crypto_amount)
        fiat_amount = self.convert(crypto_amount, q, self.fiat)
        c0, f0, w0 = self.reserve(self.crypto), self.reserve(self.fiat), self.wallet()
        ref = self.ref("sell")
        reply = self.start("sell", ref, crypto_amount)
        ck.reply(f"sell {crypto_amount} {self.crypto} for {self.fiat}: pending", reply, 200,
                 operation__state="pending", operation__direction="sell",
                 operation__fiat_amount=fiat_amount, operation__crypto_amount=crypto_amount)
        ck.equal(f"sell holds {fiat_amount} of the {self.fiat} reserve and the user's "
                 f"{crypto_amount} {self.crypto}",
                 (self.reserve(self.fiat), self.wallet()[self.crypto]),
                 ((f0[0], f0[1] + fiat_amount), (w0[self.crypto][0], crypto_amount)))
        done = self.callback(ref, reply.get("operation", "provider_tx_id") or "", "success")
        ck.reply("signed success callback: completed", done, 200,
                 operation__state="completed", operation__outcome="success")
        ck.equal(f"{self.fiat} reserve paid out {fiat_amount}, {self.crypto} reserve received "
                 f"{crypto_amount}", (self.reserve(self.fiat), self.reserve(self.crypto)),
                 ((f0[0] - fiat_amount, f0[1]), (c0[0] + crypto_amount, c0[1])))
        ck.equal(f"user paid {crypto_amount} {self.crypto}", self.wallet()[self.crypto],
                 (w0[self.crypto][0] - crypto_amount, D("0")))

        c1, f1, w1 = self.reserve(self.crypto), self.reserve(self.fiat), self.wallet()
        ref = self.ref("sellfail")
        reply = self.start("sell", ref, crypto_amount)
        ck.reply("second sell: pending", reply, 200, operation__state="pending")
        failed = self.callback(ref, reply.get("operation", "provider_tx_id") or "", "failed")
        ck.reply("signed failed callback: failed, holds released", failed, 200,
                 operation__state="failed", operation__outcome="failed")
        ck.equal("failed sell moved nothing",
                 (self.reserve(self.crypto), self.reserve(self.fiat), self.wallet()),
                 (c1, f1, w1))

    def callback_refusals(self) -> None:
        ck = self.checks
        unknown = self.callback(self.ref("nobuy"), "sim-none", "success")
        ck.reply("signed callback for an unknown operation: 404", unknown, 404,
                 code="operation_not_found")
        other_tx = self.callback(self.ref("buy"), "sim-other", "success")
        ck.reply("signed callback naming another transaction: 409", other_tx, 409,
                 code="transaction_mismatch")
        status = self.callback(self.ref("buy"), "sim-none", "maybe")
        ck.reply("signed callback with an unknown status: 401", status, 401,
                 code="bad_callback")

    def mobile_money_refusals(self) -> None:
        ck = self.checks
        c0, f0 = self.reserve(self.crypto), self.reserve(self.fiat)
        if not self.secret:
            unsigned = self.callback(self.ref("x"), "sim-x", "success", signature="0" * 64)
            ck.reply("callback with a signature the server cannot know: 401", unsigned, 401)
        for label, direction, amount, phone, status in (
                ("bad phone number", "buy", D("37000"), "12ab", 400),
                ("zero amount", "buy", D("0"), None, 400),
                ("zero amount", "sell", D("0"), None, 400)):
            reply = self.start(direction, self.ref(f"mmbad{direction}{len(label)}"), amount,
                               phone)
            ck.reply(f"{direction} with {label}: {status}", reply, status)
        swapped = self.c.post("/wallet/mobile-money/buy", {
            "user_id": self.user, "fiat_currency": self.crypto, "crypto_currency": self.fiat,
            "fiat_amount": D("1"), "phone_number": self.phone,
            "reference_id": self.ref("mmswapped")}, token="service")
        ck.reply("buy naming a crypto as the fiat: 400", swapped, 400)
        if self.refused_phone:
            reply = self.start("buy", self.ref("refused"), D("37000"), self.refused_phone)
            ck.reply("buy the provider refuses: 502", reply, 502, code="provider_refused")
            ck.reply("the refused buy is recorded as failed", self.c.get(
                f"/wallet/mobile-money/{self.ref('refused')}", token="service"), 200,
                operation__state="failed")
        else:
            ck.skip("provider refusal: 502", "no --refused-phone")
        ck.reply("GET an unknown mobile-money operation: 404", self.c.get(
            f"/wallet/mobile-money/{self.ref('nomm')}", token="service"), 404,
            code="operation_not_found")
        ck.equal("refused operations held nothing", (self.reserve(self.crypto),
                                                     self.reserve(self.fiat)), (c0, f0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the design document's swap and mobile-money checks against a live "
                    "reserves service; print a table of checks; exit 1 if any failed. Leaves "
                    "the reserves as it found them.")
    common_args(parser)
    parser.add_argument("--callback-secret",
                        default=os.environ.get("RESERVES_MOBILE_MONEY_SECRET", ""),
                        help="the provider callbacks' shared secret (default: "
                             "RESERVES_MOBILE_MONEY_SECRET); without it buy and sell are "
                             "skipped")
    parser.add_argument("--phone", default=DEFAULT_PHONE,
                        help=f"phone number of the buys and sells (default {DEFAULT_PHONE})")
    refuse = os.environ.get("RESERVES_MOBILE_MONEY_REFUSE", "").split(",")[0].strip()
    parser.add_argument("--refused-phone", default=refuse,
                        help="a phone number the provider refuses (default: the first of "
                             "RESERVES_MOBILE_MONEY_REFUSE); without it the 502 check is "
                             "skipped")
    args = parser.parse_args(argv)
    client = client_from(args, parser)
    checks = FlowsRun(client, args.crypto.upper(), args.fiat.upper(), args.callback_secret,
                      args.phone, args.refused_phone).run()
    checks.print_table(f"Swap and mobile-money checks against {client.url}")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
