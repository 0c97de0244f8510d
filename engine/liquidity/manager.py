"""The liquidity manager: triggers requests by policy, sends them to the provider (retrying with
backoff, then flagging them to an operator), and applies a request's top-up once its signed
success callback arrives.

One pass (`tick`, run by every API process's background loop; clocks are passed explicitly in
tests):

- evaluate: for each policy, read the reserve and its forecast; if utilization is at or above
  the policy's level, or the time to empty below its bound, request the forecast's suggested
  top-up (or the policy's fixed amount), lowered to what is left of the day's cap. The
  reference is `liquidity:<account>:<window start ms>`, so every process that sees the same
  trigger in the same window names the same request and only the first creates it; a reserve
  with an open request gets no second one.
- dispatch: send each due request (claimed first, so two processes never send it at once);
  a failure is retried after base * 2^(attempt - 1) s, and flagged after attempts_max.
  A request the provider accepted but never called back about is flagged after
  limits.callback_wait_s_max.

Each request, flag, confirmation and failure is a journal `audit` event and raises or clears an
alert (`<account>:liquidity|liquidity_request` warning, `...|liquidity_flagged` critical). The
top-up itself is the ordinary top_up op under the request's internal reference
(topup_reference), so it is applied once however often the callback comes (and the record's state answers repeats after the engine's
retention).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from engine.engine import ReserveEngine
from engine.errors import Conflict, NotFound, ReserveError
from engine.liquidity import limits
from engine.liquidity.book import RequestBook
from engine.liquidity.policy import Policy, PolicySet
from engine.liquidity.provider import LiquidityProvider, LiquidityRequest
from engine.money import from_minor, to_minor
from engine.references import InternalReference, flow_reference
from engine.types import Balance



def topup_reference(request_reference: str) -> InternalReference:
    """The ledger reference of a request's top-up, in the namespace no caller can write."""
    return flow_reference("liq", request_reference, "topup")

log = logging.getLogger(__name__)

ACTOR = "liquidity-manager"
Forecaster = Callable[[Balance, int], Awaitable[dict[str, Any]]]


def trigger_reason(policy: Policy, balance: Balance, forecast: dict[str, Any]) -> str | None:
    """Why the policy asks for funds now, or None. Exact integer comparisons."""
    if (policy.utilization_pct is not None and balance.total_minor > 0
            and balance.locked_minor * 100 >= policy.utilization_pct * balance.total_minor):
        return f"utilization {balance.utilization_percentage}% >= {policy.utilization_pct}%"
    to_empty = forecast.get("seconds_to_empty")
    if policy.seconds_to_empty_max is not None and to_empty is not None \
            and to_empty < policy.seconds_to_empty_max:
        return f"time to empty {to_empty} s < {policy.seconds_to_empty_max} s"
    return None


def backoff_ms(attempts: int) -> int:
    """The wait after the attempts-th failed attempt (1-based)."""
    assert attempts >= 1
    wait_s = min(limits.provider_backoff_s_base * 2 ** (attempts - 1),
                 limits.provider_backoff_s_max)
    return int(wait_s * 1000)


class LiquidityManager:
    def __init__(self, engine: ReserveEngine, policies: PolicySet, provider: LiquidityProvider,
                 *, forecaster: Forecaster | None = None, alerts: Any = None,
                 clock_ms: Callable[[], int] | None = None) -> None:
        self.engine = engine
        self.policies = policies
        self.provider = provider
        self.clock_ms = clock_ms or engine.ops.clock_ms
        if forecaster is None:
            from engine.monitoring.forecast import SampleBook

            samples = SampleBook(engine.client, engine.ops.keys, self.clock_ms)
            forecaster = samples.forecast
        self.forecaster = forecaster
        self.alerts = alerts  # engine.monitoring.alerts.AlertBook, or None: no alerts
        self.book = RequestBook(engine.client, engine.ops.keys)

    # -- views --------------------------------------------------------------------------------

    def view(self, record: dict[str, str]) -> dict[str, Any]:
        decimals = self.engine.ops.spec_of_label(record["account"]).currency.decimals

        def ms(name: str) -> int | None:
            return int(record[name]) if record.get(name) else None

        return {
            "reference_id": record["reference"], "account": record["account"],
            "currency": record.get("currency", ""), "account_type": record.get("account_type", ""),
            "state": record["state"], "amount": from_minor(int(record["amount_minor"]), decimals),
            "reason": record.get("reason", ""), "attempts": int(record.get("attempts", 0)),
            "last_error": record.get("last_error") or None,
            "provider_tx_id": record.get("provider_tx_id") or None,
            "transaction_id": int(record["transaction_id"]) if record.get("transaction_id")
            else None,
            "created_ms": ms("created_ms"), "updated_ms": ms("updated_ms"),
            "next_attempt_ms": ms("next_attempt_ms") if record["state"] == "requested" else None,
        }

    async def recent(self, count: int = limits.requests_listed_default) -> list[dict[str, Any]]:
        return [self.view(r) for r in await self.book.recent(count)]

    async def get(self, reference: str) -> dict[str, Any]:
        record = await self.book.get(reference)
        if record is None:
            raise NotFound(f"Liquidity request {reference} not found",
                           code="liquidity_request_not_found")
        return self.view(record)

    # -- one pass -----------------------------------------------------------------------------

    async def tick(self, now_ms: int | None = None) -> None:
        now_ms = self.clock_ms() if now_ms is None else now_ms
        await self.evaluate(now_ms)
        await self.dispatch(now_ms)

    async def evaluate(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Create the requests the policies call for now; returns the ones created."""
        now_ms = self.clock_ms() if now_ms is None else now_ms
        created = []
        for policy in self.policies:
            balance = await self.engine.get_reserve_balance(policy.currency, policy.account_type)
            forecast = await self.forecaster(balance, now_ms)
            reason = trigger_reason(policy, balance, forecast)
            if reason is None:
                continue
            amount_minor = policy.amount_minor
            if amount_minor is None:
                suggested = Decimal(forecast.get("suggested_top_up") or 0)
                if suggested <= 0:
                    continue  # nothing would bring it back: the fixed amount is for this
                amount_minor = to_minor(suggested, policy.decimals, policy.currency)
            window_ms = policy.window_s * 1000
            reference = f"liquidity:{policy.account}:{now_ms - now_ms % window_ms}"
            result = await self.book.create(now_ms, reference, policy.account, amount_minor,
                                            policy.daily_cap_minor, {
                                                "currency": policy.currency,
                                                "account_type": policy.account_type,
                                                "reason": reason})
            if result.code == 3:
                log.warning("liquidity: %s triggered (%s) but its daily cap is used up",
                            policy.account, reason)
            if result.code != 0:
                continue
            record = await self.book.get(reference)
            assert record is not None
            view = self.view(record)
            created.append(view)
            await self._audit("liquidity_request", view)
            await self._raise(policy.account, "liquidity_request", "warning",
                              f"{policy.currency} reserve: liquidity requested, "
                              f"{view['amount']} {policy.currency} ({reason})", reference)
        return created

    async def dispatch(self, now_ms: int | None = None) -> None:
        """Send the due requests; flag the ones the provider never answered."""
        now_ms = self.clock_ms() if now_ms is None else now_ms
        references = await self.book.open_references()
        for reference in references[:limits.requests_per_pass_max]:
            record = await self.book.get(reference)
            if record is None:
                continue
            if record["state"] == "requested":
                await self._send(record, now_ms)
            elif record["state"] == "pending" and \
                    now_ms - int(record["updated_ms"]) > limits.callback_wait_s_max * 1000:
                await self._flag(record, now_ms, ("pending",),
                                 f"no callback within {limits.callback_wait_s_max} s")
            elif record["state"] == "confirmed":  # a crash between confirmation and top-up
                await self._top_up(record, now_ms)

    async def _send(self, record: dict[str, str], now_ms: int) -> None:
        claim_until_ms = now_ms + limits.provider_claim_s * 1000
        code, _ = await self.book.advance(now_ms, record, ("requested",), "requested",
                                          {"next_attempt_ms": claim_until_ms}, due_ms=now_ms)
        if code != 0:
            return  # not due, or another process has it
        attempts = int(record["attempts"]) + 1
        decimals = self.engine.ops.spec_of_label(record["account"]).currency.decimals
        request = LiquidityRequest(record["reference"], record["account"], record["currency"],
                                   record["account_type"],
                                   from_minor(int(record["amount_minor"]), decimals))
        try:
            tx_id = await self.provider.request_liquidity(request)
        except Exception as exc:  # any failure of the provider: retried, then flagged
            error = exc.message if isinstance(exc, ReserveError) else repr(exc)
            log.warning("liquidity provider failed for %s (attempt %d): %s",
                        record["reference"], attempts, error)
            if attempts >= limits.provider_attempts_max:
                await self._flag({**record, "attempts": str(attempts)}, now_ms, ("requested",),
                                 f"provider failed {attempts} times: {error}")
            else:
                await self.book.advance(now_ms, record, ("requested",), "requested", {
                    "attempts": attempts, "last_error": error[:500],
                    "next_attempt_ms": now_ms + backoff_ms(attempts)})
            return
        # the callback may already have moved it on (a fast provider): then this is a no-op
        await self.book.advance(now_ms, record, ("requested",), "pending",
                                {"attempts": attempts, "provider_tx_id": tx_id})

    async def _flag(self, record: dict[str, str], now_ms: int, from_states: tuple[str, ...],
                    why: str) -> None:
        code, _ = await self.book.advance(now_ms, record, from_states, "flagged", {
            "attempts": record["attempts"], "last_error": why[:500]}, close=True)
        if code != 0:
            return
        view = self.view({**record, "state": "flagged", "last_error": why})
        await self._audit("liquidity_flagged", view)
        await self._clear(record["account"], "liquidity_request")
        await self._raise(record["account"], "liquidity_flagged", "critical",
                          f"{view['currency']} reserve: liquidity request {record['reference']} "
                          f"needs an operator: {why}", record["reference"])

    async def dismiss(self, reference: str, actor: str, ip: str) -> dict[str, Any]:
        """An operator closes a flagged request (they see to the reserve themselves): its
        amount goes back to the day's cap and its alert clears; a later callback is a
        duplicate. Conflict unless the request is flagged."""
        record = await self.book.get(reference)
        if record is None:
            raise NotFound(f"Liquidity request {reference} not found",
                           code="liquidity_request_not_found")
        now_ms = self.clock_ms()
        code, state = await self.book.advance(now_ms, record, ("flagged",), "dismissed",
                                              close=True, release_cap=True)
        if code != 0:
            raise Conflict(f"Liquidity request {reference} is {state}, not flagged",
                           code="liquidity_request_not_flagged")
        view = self.view({**record, "state": "dismissed", "updated_ms": str(now_ms)})
        detail = {"request": {"reference_id": reference}, "result": {"state": "dismissed"}}
        await self.engine.run(self.engine.ops.audit(actor, "liquidity_dismissed", ip, detail))
        await self._clear(record["account"], "liquidity_flagged")
        return view

    # -- callbacks ----------------------------------------------------------------------------

    async def callback(self, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """A signed provider callback: {"request": view, "duplicate_callback": bool}. Raises
        BadSignature (401: nothing changed), NotFound, Conflict."""
        now_ms = self.clock_ms()
        callback = self.provider.verify_callback(body, headers, now_ms)
        record = await self.book.get(callback.reference_id)
        if record is None:
            raise NotFound(f"Liquidity request {callback.reference_id} not found",
                           code="liquidity_request_not_found")
        known_tx = record.get("provider_tx_id")
        if known_tx and known_tx != callback.provider_tx_id:
            raise Conflict(f"Liquidity request {callback.reference_id} belongs to provider "
                           f"transaction {known_tx}, not {callback.provider_tx_id}",
                           code="provider_tx_mismatch")
        undecided = ("requested", "pending", "flagged")
        tx: dict[str, str | int] = {"provider_tx_id": callback.provider_tx_id,
                                    "callback_ts_s": callback.timestamp_s}
        if callback.status == "failed":
            code, _ = await self.book.advance(now_ms, record, undecided, "failed", tx,
                                              close=True, release_cap=True)
            if code == 0:
                view = self.view({**record, "state": "failed"})
                await self._audit("liquidity_failed", view)
                await self._clear(record["account"], "liquidity_request")
                await self._clear(record["account"], "liquidity_flagged")
        else:
            code, _ = await self.book.advance(now_ms, record, undecided, "confirmed", tx)
            fresh = await self.book.get(callback.reference_id)
            assert fresh is not None
            if fresh["state"] == "confirmed":  # now, or a crash left it there: top up (once)
                await self._top_up(fresh, now_ms)
        final = await self.book.get(callback.reference_id)
        assert final is not None
        return {"request": self.view(final), "duplicate_callback": code != 0}

    async def _top_up(self, record: dict[str, str], now_ms: int) -> None:
        """The request's top-up through the ordinary op, idempotent on the request's reference;
        then the record says completed."""
        spec = self.engine.ops.spec_of_label(record["account"])
        meta = {"actor": f"liquidity:{getattr(self.provider, 'name', 'provider')}", "ip": "",
                "action": "liquidity_topup",
                "request": {"reference_id": record["reference"],
                            "provider_tx_id": record.get("provider_tx_id", "")}}
        # an internal reference: a caller's top-up named like the request is never taken for it
        result = await self.engine.run(self.engine.ops.top_up(
            spec, int(record["amount_minor"]), topup_reference(record["reference"]), meta))
        code, _ = await self.book.advance(now_ms, record, ("confirmed",), "completed",
                                          {"transaction_id": result.transaction_id},
                                          close=True)
        if code == 0:
            await self._clear(record["account"], "liquidity_request")
            await self._clear(record["account"], "liquidity_flagged")

    # -- audit and alerts ---------------------------------------------------------------------

    async def _audit(self, action: str, view: dict[str, Any]) -> None:
        detail = {"request": {k: view[k] for k in ("reference_id", "account", "amount",
                                                    "reason", "attempts", "last_error")},
                  "result": {"state": view["state"]}}
        await self.engine.run(self.engine.ops.audit(ACTOR, action, "", detail))

    async def _raise(self, account: str, kind: str, level: str, message: str,
                     value: str) -> None:
        if self.alerts is None:
            return
        from engine.monitoring.alerts import Transition, Wanted

        # The account carries a suffix: the monitor clears the alerts of the reserves it
        # evaluates that it does not want, and these are not its to clear.
        # Cleared first: each request is an alert of its own, with its own message.
        wanted = Wanted(f"{account}:liquidity", kind, level, message, value)
        await self.alerts.apply([Transition("clear", wanted.key, None),
                                 Transition("raise", wanted.key, wanted)])

    async def _clear(self, account: str, kind: str) -> None:
        if self.alerts is None:
            return
        from engine.monitoring.alerts import Transition

        await self.alerts.apply([Transition("clear", f"{account}:liquidity|{kind}", None)])
