"""Swap: the user's funds in one currency for a reserve's funds in another, all or nothing.

References, flow_reference("swap", R, leg) of the swap's reference_id R for each leg:
    from   hold on the from-currency reserve (the seed's check of both reserves)
    to     hold on the to-currency reserve: committed, it pays the user
    user   hold on the user's from-currency wallet: committed, it pays the from reserve
    credit_from / credit_to    the credits of the from reserve and of the user
    refund_user / refund_to    paybacks when a commit half-succeeded before a hold expired
    reverse_from   takes back the from reserve's credit when abort() finds the user's not made

States: reserving -> executing -> completed, or -> failed (every hold undone). The field
`decision` (first writer wins) settles a race between a slow request and recover().
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.engine import ReserveEngine
from engine.errors import InsufficientReserve, InvalidRequest, ReferenceConflict, ReserveError
from engine.flows import limits
from engine.flows.errors import FlowNotFound, RecordedFailure
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

KIND = "swap"
TERMINAL = ("completed", "failed")


def _ref(ref: str, leg: str) -> InternalReference:
    return flow_reference(KIND, ref, leg)


class Swaps:
    def __init__(self, engine: ReserveEngine, store: FlowStore, quotes: Quotes) -> None:
        self.engine = engine
        self.store = store
        self.quotes = quotes

    async def create(self, user_id: Any, from_currency: Any, to_currency: Any, from_amount: Any,
                     reference_id: Any, quote_id: Any = None) -> dict[str, Any]:
        check_reference(reference_id)
        source, target = self.quotes.pair(from_currency, to_currency)
        self.engine.ops.user_spec(user_id, source.code)  # validates user_id
        from_minor_ = to_minor(from_amount, source.decimals, source.code, "from_amount")
        request = {"user_id": user_id, "from_currency": source.code, "to_currency": target.code,
                   "from_amount": str(parse_decimal(from_amount).normalize()),
                   "quote_id": quote_id}
        repeat = await self._repeat(reference_id, request)
        if repeat is not None:  # before the quote: a repeat answers even after it expired
            return await self._advance(reference_id, repeat, abandon=False)
        if quote_id is not None:
            quote = await self.quotes.get(quote_id)
            if (quote.source.code, quote.target.code, quote.from_minor) != (
                    source.code, target.code, from_minor_):
                raise InvalidRequest(f"Quote {quote_id} is for another pair or amount",
                                     code="quote_mismatch")
            to_minor_, rate, spread = quote.to_minor, quote.rate, quote.spread
        else:
            to_minor_, pair = self.quotes.price(source, target, from_minor_)
            rate, spread = pair.rate, pair.spread
        if not await self.store.claim(KIND, reference_id, request):
            repeat = await self._repeat(reference_id, request)
            if repeat is not None:
                return await self._advance(reference_id, repeat, abandon=False)
        now_ms = self.engine.ops.clock_ms()
        fields = {"state": "reserving", "user_id": user_id, "from_currency": source.code,
                  "to_currency": target.code, "from_minor": str(from_minor_),
                  "to_minor": str(to_minor_), "rate": str(rate), "spread": str(spread),
                  "quote_id": quote_id or "", "created_ms": str(now_ms)}
        await self.store.mark_open(KIND, reference_id, now_ms + limits.swap_hold_ttl_s * 1000)
        await self.store.update(KIND, reference_id, **fields)
        record = await self.store.load(KIND, reference_id)
        return await self._advance(reference_id, record, abandon=False)

    async def _repeat(self, ref: str, request: dict[str, Any]) -> dict[str, str] | None:
        """The record of an earlier request with this reference (None: first, or not started)."""
        record = await self.store.load(KIND, ref)
        if not record:
            if await self.store.was_used(KIND, ref):  # its record expired: never reused
                raise ReferenceConflict(
                    f"reference_id {ref} was already used by an earlier swap; a flow "
                    "reference is never reused", code="reference_reused")
            return None
        if record.get("request") != canonical(request):
            raise ReferenceConflict(f"reference_id {ref} was already used for a different swap",
                                    code="reference_conflict")
        return record if "state" in record else None

    async def get(self, reference_id: str) -> dict[str, Any]:
        check_reference(reference_id)
        record = await self.store.load(KIND, reference_id)
        if "state" not in record:
            raise FlowNotFound(f"Swap {reference_id} not found", code="swap_not_found")
        return await self.view(reference_id, record)

    async def recover(self, reference_id: str) -> dict[str, Any]:
        """Finish or undo a swap left half-way (its deadline passed): a crash never strands."""
        record = await self.store.load(KIND, reference_id)
        if "state" not in record:  # claimed, then crashed before any hold
            await self.store.mark_settled(KIND, reference_id)
            return {}
        return await self._advance(reference_id, record, abandon=True)

    async def abort(self, reference_id: str, error: dict[str, Any]) -> None:
        """End a swap that cannot go on (recovery failed for good): every leg it applied is
        compensated, so it ends `failed` with the user and the reserves as before it, or
        `completed` if its last credit had been made."""
        ref = reference_id
        r = await self.store.load(KIND, ref)
        if "state" not in r or r["state"] in TERMINAL:
            await self.store.mark_settled(KIND, ref)
            return
        if r["state"] == "executing" and await self._compensate_credits(ref, r):
            return
        await self.store.update(KIND, ref, state="rolling_back", error_status=str(
            error.get("status", 500)), error=error)
        await self._rollback(ref, r)

    async def _compensate_credits(self, ref: str, r: dict[str, str]) -> bool:
        """The credits of an executing swap, each applied or not: re-running one is idempotent,
        so a credit that goes through now was either made before or is made now; a refused one
        was never made. True: both credits stand (the swap is complete)."""
        specs = self._specs(r)
        from_minor_, to_minor_ = int(r["from_minor"]), int(r["to_minor"])
        meta = {"flow": KIND, "ref": ref, "compensation": True}
        ops = self.engine.ops
        try:
            await self.engine.run(ops.top_up(specs["from"], from_minor_, _ref(ref, "credit_from"),
                                             meta))
        except ReserveError as err:
            if err.status_code >= 500:
                raise
            return False  # never made: nothing to take back
        try:
            await self.engine.run(ops.top_up(specs["user_to"], to_minor_, _ref(ref, "credit_to"),
                                             meta))
        except ReserveError as err:
            if err.status_code >= 500:
                raise
        else:  # every leg is made: the swap is complete, the from hold only a check
            await self.store.update(KIND, ref, state="completed")
            await self.store.mark_settled(KIND, ref)
            await self.store.journal("swap_completed", ref, {"user_id": r["user_id"]})
            return True
        # the from reserve was credited, the user not: take the credit back
        await self.engine.run(ops.withdraw(specs["from"], from_minor_, _ref(ref, "reverse_from"),
                                           meta))
        return False

    # -- the state machine ----------------------------------------------------------------------

    def _specs(self, r: dict[str, str]) -> dict[str, AccountSpec]:
        ops = self.engine.ops
        return {"from": ops.reserve_spec(r["from_currency"], None),
                "to": ops.reserve_spec(r["to_currency"], None),
                "user": ops.user_spec(r["user_id"], r["from_currency"]),
                "user_to": ops.user_spec(r["user_id"], r["to_currency"])}

    async def _advance(self, ref: str, record: dict[str, str], abandon: bool) -> dict[str, Any]:
        state = record["state"]
        refusal: ReserveError | None = None
        if state == "reserving":
            decision, refusal = ("rollback", None) if abandon else await self._reserve(ref, record)
            decision = await self.store.set_first(KIND, ref, "decision", decision)
            state = "executing" if decision == "execute" else "rolling_back"
            await self.store.update(KIND, ref, state=state)
        if state == "executing" and not await self._execute(ref, record):
            state = "rolling_back"
            await self.store.update(KIND, ref, state=state, error_status="409", error={
                "success": False, "error": f"Swap {ref} timed out before it executed",
                "code": "swap_expired"})
        if state == "rolling_back":
            await self._rollback(ref, record)
        record = await self.store.load(KIND, ref)
        if record["state"] == "failed":
            if refusal is not None:
                raise refusal
            raise RecordedFailure(int(record.get("error_status", "409")),
                                  decode(record.get("error")))
        return await self.view(ref, record)

    async def _reserve(self, ref: str, r: dict[str, str]) -> tuple[str, ReserveError | None]:
        """Hold both reserve legs and the user's funds, all or nothing."""
        specs = self._specs(r)
        from_minor_, to_minor_ = int(r["from_minor"]), int(r["to_minor"])
        legs = [(specs["from"], from_minor_, _ref(ref, "from")),
                (specs["to"], to_minor_, _ref(ref, "to")),
                (specs["user"], from_minor_, _ref(ref, "user"))]
        try:
            try:
                await self._check(legs)
                await self.engine.run(self.engine.ops.reserve_many(
                    legs, KIND, limits.swap_hold_ttl_s, {"flow": KIND, "ref": ref}))
            except InsufficientReserve:
                await self._check(legs)  # a race took the funds: say which leg, if still short
                raise
        except ReserveError as err:
            if err.status_code >= 500:
                raise  # Redis unavailable: the state stays, a repeat or recover() goes on
            decision = await self.store.set_first(KIND, ref, "decision", "rollback")
            if decision == "rollback":
                await self.store.update(KIND, ref, error_status=str(err.status_code),
                                        error=err.to_dict())
            return decision, err
        return "execute", None

    async def _check(self, legs: list[tuple[AccountSpec, int, InternalReference]]) -> None:
        balances = await self.engine.run(self.engine.ops.balances([s for s, _, _ in legs]))
        for (spec, amount_minor, ref), balance in zip(legs, balances, strict=True):
            if balance.available_minor >= amount_minor:
                continue
            if ref.leg == "user":
                raise insufficient_funds(balance, amount_minor)
            raise insufficient_reserve(balance, amount_minor, ref.leg)

    async def _execute(self, ref: str, r: dict[str, str]) -> bool:
        """Debit the user and the to reserve, then credit. False: a hold had expired."""
        specs = self._specs(r)
        from_minor_, to_minor_ = int(r["from_minor"]), int(r["to_minor"])
        meta = {"flow": KIND, "ref": ref}
        if not await commit_hold(self.engine, _ref(ref, "user"), from_minor_, meta):
            return False
        if not await commit_hold(self.engine, _ref(ref, "to"), to_minor_, meta):
            return False
        ops = self.engine.ops
        await self.engine.run(ops.top_up(specs["from"], from_minor_, _ref(ref, "credit_from"),
                                         meta))
        await self.engine.run(ops.top_up(specs["user_to"], to_minor_, _ref(ref, "credit_to"), meta))
        await undo_hold(self.engine, _ref(ref, "from"), specs["from"], _ref(ref, "refund_from"),
                        meta)
        await self.store.update(KIND, ref, state="completed")
        await self.store.mark_settled(KIND, ref)
        await self.store.journal("swap_completed", ref, {"user_id": r["user_id"]})
        return True

    async def _rollback(self, ref: str, r: dict[str, str]) -> None:
        specs = self._specs(r)
        meta = {"flow": KIND, "ref": ref, "rollback": True}
        await undo_hold(self.engine, _ref(ref, "user"), specs["user"], _ref(ref, "refund_user"),
                        meta)
        await undo_hold(self.engine, _ref(ref, "to"), specs["to"], _ref(ref, "refund_to"), meta)
        await undo_hold(self.engine, _ref(ref, "from"), specs["from"], _ref(ref, "refund_from"),
                        meta)
        await self.store.update(KIND, ref, state="failed")
        await self.store.mark_settled(KIND, ref)
        await self.store.journal("swap_failed", ref, {"user_id": r["user_id"]})

    async def view(self, ref: str, r: dict[str, str]) -> dict[str, Any]:
        source = self.engine.registry.get(r["from_currency"])
        target = self.engine.registry.get(r["to_currency"])
        legs = [await hold_view(self.engine, _ref(ref, leg)) for leg in ("from", "to", "user")]
        return {
            "reference_id": ref,
            "user_id": r["user_id"],
            "state": r["state"],
            "from_currency": source.code,
            "to_currency": target.code,
            "from_amount": from_minor(int(r["from_minor"]), source.decimals),
            "to_amount": from_minor(int(r["to_minor"]), target.decimals),
            "rate": Decimal(r["rate"]),
            "spread": Decimal(r["spread"]),
            "quote_id": r.get("quote_id") or None,
            "legs": legs,
            "error": decode(r["error"]) if r.get("error") else None,
            "flag": r.get("flag"),  # set aside for an operator (GET /wallet/flows/flagged)
        }
