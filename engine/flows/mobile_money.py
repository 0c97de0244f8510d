"""Mobile-money buys (fiat -> crypto) and sells (crypto -> fiat) behind a provider.

References, flow_reference("mm", R, leg) of the operation's reference_id R (one namespace for
buys and sells) for each leg:
  buy:  crypto (hold, crypto reserve), credit_user (user's crypto), collected (fiat reserve: the
        money collected), crypto_late (debit when a late success found the hold expired)
  sell: fiat (hold, fiat reserve: the payout), user (hold, user's crypto), credit_crypto (crypto
        reserve), fiat_late / user_late (debits after an expired hold)
  both: <hold leg>_refund (payback of a hold committed before the operation failed)

States: reserving -> initiating -> pending -> completed | failed | expired, or
settlement_failed (a success arrived after the holds expired and the money was gone: an
operator settles it). `outcome` (first writer wins: the callback's status, provider_error,
refused, expired) decides; every step after it is idempotent, so any re-run finishes it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.engine import ReserveEngine
from engine.errors import (
    Conflict,
    InsufficientReserve,
    InvalidRequest,
    ReferenceConflict,
    ReserveError,
)
from engine.flows import limits
from engine.flows.errors import BadSignature, FlowNotFound, RecordedFailure
from engine.flows.providers import MobileMoneyProvider, ProviderRequest
from engine.flows.quotes import Quotes
from engine.flows.steps import (
    commit_hold,
    hold_view,
    insufficient_funds,
    insufficient_reserve,
    undo_hold,
)
from engine.flows.store import FlowStore, canonical, decode
from engine.money import from_minor, parse_decimal, to_minor
from engine.ops import AccountSpec, check_reference
from engine.references import InternalReference, flow_reference
from engine.registry import AccountType, Currency

KIND = "mm"
TERMINAL = ("completed", "failed", "expired", "settlement_failed", "settled_after_expiry",
            "refunded")
# Flagged operations an operator settles, and how.
SETTLEABLE = ("settlement_failed", "settled_after_expiry")
SETTLE_ACTIONS = ("credit", "refunded")
_PHONE_CHARS = set("+0123456789")


def _ref(ref: str, leg: str) -> InternalReference:
    return flow_reference(KIND, ref, leg)


class MobileMoney:
    def __init__(self, engine: ReserveEngine, store: FlowStore, quotes: Quotes,
                 provider: MobileMoneyProvider,
                 hold_ttl_s: int = limits.mobile_money_hold_ttl_s) -> None:
        assert hold_ttl_s > 0, hold_ttl_s
        self.engine = engine
        self.hold_ttl_s = hold_ttl_s
        self.store = store
        self.quotes = quotes
        self.provider = provider

    # -- requests -------------------------------------------------------------------------------

    async def buy(self, user_id: Any, fiat_currency: Any, crypto_currency: Any, fiat_amount: Any,
                  phone_number: Any, reference_id: Any) -> dict[str, Any]:
        """Pay fiat by mobile money, receive crypto from the reserve."""
        fiat, crypto = self._currencies(fiat_currency, crypto_currency)
        fiat_minor = to_minor(fiat_amount, fiat.decimals, fiat.code, "fiat_amount")
        crypto_minor, pair = self.quotes.price(fiat, crypto, fiat_minor)
        return await self._start("buy", user_id, fiat, crypto, fiat_minor, crypto_minor,
                                 pair.rate, fiat_amount, phone_number, reference_id)

    async def sell(self, user_id: Any, crypto_currency: Any, fiat_currency: Any,
                   crypto_amount: Any, phone_number: Any, reference_id: Any) -> dict[str, Any]:
        """Pay crypto from the wallet, receive fiat by mobile money from the reserve."""
        fiat, crypto = self._currencies(fiat_currency, crypto_currency)
        crypto_minor = to_minor(crypto_amount, crypto.decimals, crypto.code, "crypto_amount")
        fiat_minor, pair = self.quotes.price(crypto, fiat, crypto_minor)
        return await self._start("sell", user_id, fiat, crypto, fiat_minor, crypto_minor,
                                 pair.rate, crypto_amount, phone_number, reference_id)

    def _currencies(self, fiat_code: Any, crypto_code: Any) -> tuple[Currency, Currency]:
        fiat, crypto = self.quotes.pair(fiat_code, crypto_code)
        if fiat.account_type is not AccountType.fiat:
            raise InvalidRequest(f"{fiat.code} is not a fiat currency")
        if crypto.account_type is not AccountType.crypto:
            raise InvalidRequest(f"{crypto.code} is not a crypto currency")
        return fiat, crypto

    async def _start(self, direction: str, user_id: Any, fiat: Currency, crypto: Currency,
                     fiat_minor: int, crypto_minor: int, rate: Decimal, amount: Any,
                     phone_number: Any, ref: Any) -> dict[str, Any]:
        check_reference(ref)
        self.engine.ops.user_spec(user_id, crypto.code)  # validates user_id
        if (not isinstance(phone_number, str) or not 7 <= len(phone_number) <= 16
                or not set(phone_number) <= _PHONE_CHARS):
            raise InvalidRequest("phone_number must be 7-16 digits, optionally with +")
        request = {"direction": direction, "user_id": user_id, "fiat": fiat.code,
                   "crypto": crypto.code, "amount": str(parse_decimal(amount).normalize()),
                   "phone_number": phone_number}
        record = await self._repeat(ref, request)
        if record is None:
            now_ms = self.engine.ops.clock_ms()
            deadline_ms = now_ms + self.hold_ttl_s * 1000
            await self.store.claim(KIND, ref, request)
            record = await self._repeat(ref, request)  # a racing twin may have started it
            if record is None:
                await self.store.mark_open(KIND, ref, deadline_ms)
                await self.store.update(
                    KIND, ref, state="reserving", direction=direction, user_id=user_id,
                    fiat_currency=fiat.code, crypto_currency=crypto.code,
                    fiat_minor=str(fiat_minor), crypto_minor=str(crypto_minor), rate=str(rate),
                    phone_number=phone_number, created_ms=str(now_ms),
                    deadline_ms=str(deadline_ms))
                record = await self.store.load(KIND, ref)
        return await self._advance(ref, record, abandon=False)

    async def _repeat(self, ref: str, request: dict[str, Any]) -> dict[str, str] | None:
        record = await self.store.load(KIND, ref)
        if not record:
            if await self.store.was_used(KIND, ref):  # its record expired: never reused
                raise ReferenceConflict(
                    f"reference_id {ref} was already used by an earlier mobile-money "
                    "operation; a flow reference is never reused", code="reference_reused")
            return None
        if record.get("request") != canonical(request):
            raise ReferenceConflict(
                f"reference_id {ref} was already used for a different mobile-money operation",
                code="reference_conflict")
        return record if "state" in record else None

    async def get(self, reference_id: str) -> dict[str, Any]:
        check_reference(reference_id)
        record = await self.store.load(KIND, reference_id)
        if "state" not in record:
            raise FlowNotFound(f"Mobile-money operation {reference_id} not found",
                               code="operation_not_found")
        return await self.view(reference_id, record)

    async def callback(self, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """A provider's callback: verified first (a bad one changes nothing), then applied once.

        It counts only for the transaction the operation recorded when it initiated (a callback
        before that is 409 and the provider retries), and only within callback_age_s_max of its
        signed timestamp. Nothing it reports is dropped: a contradicting callback (a success
        after the operation expired, a failure after it completed) is recorded and flags the
        operation for an operator."""
        cb = self.provider.verify_callback(body, headers)
        age_ms = abs(self.engine.ops.clock_ms() - cb.sent_ms)
        if age_ms > limits.callback_age_s_max * 1000:
            raise BadSignature(f"Callback timestamp is {age_ms // 1000} s away from now (at most "
                               f"{limits.callback_age_s_max} s)", code="callback_stale")
        ref = cb.reference_id
        record = await self.store.load(KIND, ref)
        if "state" not in record:
            raise FlowNotFound(f"No mobile-money operation {ref}", code="operation_not_found")
        known_tx = record.get("provider_tx_id")
        if not known_tx:
            raise Conflict(f"Operation {ref} has no provider transaction yet: retry the callback",
                           code="callback_too_early")
        if known_tx != cb.provider_tx_id:
            raise ReferenceConflict(f"Callback transaction {cb.provider_tx_id} does not match "
                                    f"operation {ref}", code="transaction_mismatch")
        duplicate = record["state"] in TERMINAL
        outcome = await self.store.set_first(KIND, ref, "outcome", cb.status)
        await self.store.update(KIND, ref, last_callback=f"{cb.status}@{cb.sent_ms}")
        record = await self.store.load(KIND, ref)
        if record["state"] == "pending":  # else the request in flight applies it (it reads after)
            await self._apply(ref, record)
            record = await self.store.load(KIND, ref)
        if outcome != cb.status:
            record = await self._contradicted(ref, record, cb.status)
        view = await self.view(ref, record)
        view["duplicate_callback"] = duplicate
        return view

    async def _contradicted(self, ref: str, r: dict[str, str], status: str) -> dict[str, str]:
        """The provider reports another result than the one that decided the operation."""
        if r.get("settled_by"):  # an operator settled it already: a repeat changes nothing
            return r
        if r["state"] not in TERMINAL:
            await self._apply(ref, r)  # the decided outcome first (idempotent steps)
            r = await self.store.load(KIND, ref)
        error = {"status": 409, "success": False, "code": "callback_contradicts",
                 "error": f"Provider reported {status} for operation {ref} after it was "
                          f"{r['state']} ({r.get('outcome')})"}
        if status == "success" and r["state"] in ("expired", "failed"):
            # the provider collected or paid out after the holds were released: an operator
            # credits it (if liquidity allows) or marks it refunded (settle())
            await self.store.update(KIND, ref, state="settled_after_expiry")
            await self.store.flag(KIND, ref, "settled_after_expiry", error)
        elif r["state"] not in ("settled_after_expiry", "settlement_failed"):
            await self.store.flag(KIND, ref, "contradicting_callback", error)
        return await self.store.load(KIND, ref)

    async def settle(self, reference_id: str, action: Any,
                     meta: dict[str, Any]) -> dict[str, Any]:
        """An operator settles a flagged operation: `credit` applies it as a success (409 while
        the reserve cannot cover it: nothing changed), `refunded` records that the provider's
        money went back to the user off-ledger. Idempotent: the same action again answers the
        same; the other one is 409."""
        check_reference(reference_id)
        if action not in SETTLE_ACTIONS:
            raise InvalidRequest(f"action must be one of {', '.join(SETTLE_ACTIONS)}",
                                 code="invalid_action")
        ref = reference_id
        r = await self.store.load(KIND, ref)
        if "state" not in r:
            raise FlowNotFound(f"Mobile-money operation {ref} not found",
                               code="operation_not_found")
        settled = r.get("settled_by")
        if settled is not None and settled != action:
            raise Conflict(f"Operation {ref} was already settled as {settled}",
                           code="already_settled", settled_by=settled)
        if settled is None and r["state"] not in SETTLEABLE:
            raise Conflict(f"Operation {ref} is {r['state']}: only a flagged operation "
                           f"({', '.join(SETTLEABLE)}) is settled by an operator",
                           code="not_settleable", state=r["state"])
        if settled is None:
            if action == "credit":
                # the debits whose holds are gone come from the available balances: check
                # them all first, so that a 409 leaves everything as it was
                await self._check([leg for leg in self._holds(ref, r) if (await hold_view(
                    self.engine, leg[2]))["state"] not in ("pending", "committed")])
                if await self._settle(ref, r, meta) != "completed":
                    crypto = r["direction"] == "buy"
                    raise InsufficientReserve(
                        f"The {'crypto reserve' if crypto else 'user or fiat reserve'} cannot "
                        f"cover operation {ref} now: settle it later, or mark it refunded",
                        code="exceeds_available")
                state = "completed"
            else:
                state = "refunded"
            await self.store.set_first(KIND, ref, "settled_by", action)
            await self.store.update(KIND, ref, state=state)
            await self.store.journal(f"{r['direction']}_{state}", ref,
                                     {"user_id": r["user_id"], "settled_by": action})
        await self.store.unflag(KIND, ref)
        return await self.view(ref, await self.store.load(KIND, ref))

    async def recover(self, reference_id: str) -> dict[str, Any]:
        """Past its deadline with no callback: expire it (release the holds)."""
        record = await self.store.load(KIND, reference_id)
        if "state" not in record:
            await self.store.mark_settled(KIND, reference_id)
            return {}
        await self.store.set_first(KIND, reference_id, "outcome", "expired")
        record = await self.store.load(KIND, reference_id)
        await self._apply(reference_id, record)
        return await self.view(reference_id, await self.store.load(KIND, reference_id))

    async def abort(self, reference_id: str, error: dict[str, Any]) -> None:
        """End an operation whose recovery failed for good. Without a success its holds are
        undone (`expired`); after a success the provider moved real money, which only an
        operator can settle (`settlement_failed`, see settle())."""
        ref = reference_id
        r = await self.store.load(KIND, ref)
        if "state" not in r or r["state"] in TERMINAL:
            await self.store.mark_settled(KIND, ref)
            return
        await self.store.update(KIND, ref, error_status=str(error.get("status", 500)),
                                error=error)
        if await self.store.set_first(KIND, ref, "outcome", "expired") == "success":
            await self.store.update(KIND, ref, state="settlement_failed")
            await self.store.mark_settled(KIND, ref)
            return
        await self._apply(ref, await self.store.load(KIND, ref))

    # -- the state machine ----------------------------------------------------------------------

    def _specs(self, r: dict[str, str]) -> dict[str, AccountSpec]:
        ops = self.engine.ops
        return {"fiat": ops.reserve_spec(r["fiat_currency"], None),
                "crypto": ops.reserve_spec(r["crypto_currency"], None),
                "user": ops.user_spec(r["user_id"], r["crypto_currency"])}

    def _holds(self, ref: str,
               r: dict[str, str]) -> list[tuple[AccountSpec, int, InternalReference]]:
        specs = self._specs(r)
        if r["direction"] == "buy":
            return [(specs["crypto"], int(r["crypto_minor"]), _ref(ref, "crypto"))]
        return [(specs["fiat"], int(r["fiat_minor"]), _ref(ref, "fiat")),
                (specs["user"], int(r["crypto_minor"]), _ref(ref, "user"))]

    async def _advance(self, ref: str, r: dict[str, str], abandon: bool) -> dict[str, Any]:
        refusal: ReserveError | None = None
        if r["state"] == "reserving" and "outcome" not in r:
            refusal = await self._reserve(ref, r)
            if refusal is None:
                await self.store.update(KIND, ref, state="initiating")
            r = await self.store.load(KIND, ref)
        if r["state"] == "initiating" and "outcome" not in r:
            await self._initiate(ref, r)
            r = await self.store.load(KIND, ref)
        if "outcome" in r and r["state"] not in TERMINAL:
            await self._apply(ref, r)
            r = await self.store.load(KIND, ref)
        if r["state"] == "failed" and r.get("outcome") in ("refused", "provider_error"):
            if refusal is not None:
                raise refusal
            raise RecordedFailure(int(r.get("error_status", "409")),
                                  decode(r.get("error")))
        return await self.view(ref, r)

    async def _reserve(self, ref: str, r: dict[str, str]) -> ReserveError | None:
        legs = self._holds(ref, r)
        ops = self.engine.ops
        try:
            try:
                await self._check(legs)
                await self.engine.run(ops.reserve_many(
                    legs, r["direction"], self.hold_ttl_s,
                    {"flow": r["direction"], "ref": ref}))
            except InsufficientReserve:
                await self._check(legs)
                raise
        except ReserveError as err:
            if err.status_code >= 500:
                raise
            await self._refuse(ref, "refused", err)
            return err
        return None

    async def _check(self, legs: list[tuple[AccountSpec, int, InternalReference]]) -> None:
        balances = await self.engine.run(self.engine.ops.balances([s for s, _, _ in legs]))
        for (_, amount_minor, ref), balance in zip(legs, balances, strict=True):
            if balance.available_minor < amount_minor:
                if ref.leg == "user":
                    raise insufficient_funds(balance, amount_minor)
                raise insufficient_reserve(balance, amount_minor, ref.leg)

    async def _refuse(self, ref: str, outcome: str, err: ReserveError) -> None:
        if await self.store.set_first(KIND, ref, "outcome", outcome) == outcome:
            await self.store.update(KIND, ref, error_status=str(err.status_code),
                                    error=err.to_dict())

    async def _initiate(self, ref: str, r: dict[str, str]) -> None:
        buy = r["direction"] == "buy"
        fiat = self.engine.registry.get(r["fiat_currency"])
        request = ProviderRequest("collection" if buy else "payout", ref, r["phone_number"],
                                  fiat.code, from_minor(int(r["fiat_minor"]), fiat.decimals))
        try:
            if buy:
                tx_id = await self.provider.initiate_collection(request)
            else:
                tx_id = await self.provider.initiate_payout(request)
        except ReserveError as err:
            if err.status_code != 502:
                raise
            await self._refuse(ref, "provider_error", err)
            return
        await self.store.set_first(KIND, ref, "provider_tx_id", tx_id)
        await self.store.update(KIND, ref, state="pending")

    async def _apply(self, ref: str, r: dict[str, str]) -> None:
        outcome = r["outcome"]
        if r["state"] in TERMINAL:
            return
        if outcome == "success":
            state = await self._settle(ref, r)
            if state == "settlement_failed":
                await self.store.flag(KIND, ref, "settlement_failed", {
                    "status": 409, "success": False, "code": "settlement_failed",
                    "error": f"Provider reported success for operation {ref} after its holds "
                             f"expired, and the reserve could not cover it"})
        else:
            meta = {"flow": r["direction"], "ref": ref, "outcome": outcome}
            for spec, _, hold_ref in self._holds(ref, r):
                await undo_hold(self.engine, hold_ref, spec, hold_ref.sibling("refund"), meta)
            state = "expired" if outcome == "expired" else "failed"
        await self.store.update(KIND, ref, state=state)
        await self.store.mark_settled(KIND, ref)
        await self.store.journal(f"{r['direction']}_{state}", ref, {"user_id": r["user_id"]})

    async def _settle(self, ref: str, r: dict[str, str],
                      audit: dict[str, Any] | None = None) -> str:
        specs = self._specs(r)
        meta = {"flow": r["direction"], "ref": ref, **(audit or {})}
        crypto_minor, fiat_minor = int(r["crypto_minor"]), int(r["fiat_minor"])
        ops = self.engine.ops
        if r["direction"] == "buy":
            if not await self._debit(_ref(ref, "crypto"), specs["crypto"], crypto_minor, meta):
                return "settlement_failed"
            await self.engine.run(ops.top_up(specs["user"], crypto_minor, _ref(ref, "credit_user"),
                                             meta))
            await self.engine.run(ops.top_up(specs["fiat"], fiat_minor, _ref(ref, "collected"),
                                             meta))
            return "completed"
        if not await self._debit(_ref(ref, "user"), specs["user"], crypto_minor, meta):
            return "settlement_failed"
        await self.engine.run(ops.top_up(specs["crypto"], crypto_minor, _ref(ref, "credit_crypto"),
                                         meta))
        if not await self._debit(_ref(ref, "fiat"), specs["fiat"], fiat_minor, meta):
            return "settlement_failed"
        return "completed"

    async def _debit(self, hold_ref: InternalReference, spec: AccountSpec, amount_minor: int,
                     meta: dict[str, Any]) -> bool:
        """Commit the hold; if it expired meanwhile, debit the available balance instead."""
        if await commit_hold(self.engine, hold_ref, amount_minor, meta):
            return True
        try:
            await self.engine.run(self.engine.ops.withdraw(spec, amount_minor,
                                                           hold_ref.sibling("late"), meta))
        except InsufficientReserve:
            return False
        return True

    async def view(self, ref: str, r: dict[str, str]) -> dict[str, Any]:
        fiat = self.engine.registry.get(r["fiat_currency"])
        crypto = self.engine.registry.get(r["crypto_currency"])
        return {
            "reference_id": ref,
            "direction": r["direction"],
            "state": r["state"],
            "outcome": r.get("outcome"),
            "user_id": r["user_id"],
            "fiat_currency": fiat.code,
            "crypto_currency": crypto.code,
            "fiat_amount": from_minor(int(r["fiat_minor"]), fiat.decimals),
            "crypto_amount": from_minor(int(r["crypto_minor"]), crypto.decimals),
            "rate": Decimal(r["rate"]),
            "phone_number": r["phone_number"],
            "provider_tx_id": r.get("provider_tx_id"),
            "expires_at_ms": int(r["deadline_ms"]),
            "legs": [await hold_view(self.engine, h) for _, _, h in self._holds(ref, r)],
            "error": decode(r["error"]) if r.get("error") else None,
            "flag": r.get("flag"),  # set aside for an operator (GET /wallet/flows/flagged)
        }
