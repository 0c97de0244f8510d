"""The wallet flows over HTTP (role service): user deposits and balances, quotes, swaps,
mobile-money buys and sells; and the provider's callback, public but HMAC-signed.

The flows object (engine.flows.wallet.Wallet) lives in ctx.extras["wallet"]; a background task
runs its recover() so a flow whose caller crashed, or whose callback never came, is finished or
undone. Configuration (environment):

    RESERVES_MOBILE_MONEY_SECRET    shared secret of the callback signatures (none: callbacks 401)
    RESERVES_MOBILE_MONEY_TTL_S     how long a mobile-money hold waits for its callback (900)
    RESERVES_MOBILE_MONEY_SIMULATE  the built-in simulated provider: manual (default: no callback
                                    of its own), success or failed (calls back after a delay)
    RESERVES_MOBILE_MONEY_DELAY_S   that delay (2)
    RESERVES_MOBILE_MONEY_REFUSE    phone numbers (comma-separated) whose collections and payouts
                                    the simulated provider refuses (502), to try that path
    RESERVES_RATES                  the static price table (engine/flows/rates.toml)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import api.convertors  # noqa: F401  (registers {...:reference})
from api.auth import Role
from api.context import ApiContext
from api.endpoint import audited, endpoint
from api.jsonio import error_response, json_response, read_object, required, text
from api.openapi import AMOUNT, NUMBER, REFERENCE, body, ok, operation, path_param, ref
from engine import limits as engine_limits
from engine.errors import InvalidRequest, ReserveError
from engine.flows import limits as flow_limits
from engine.flows.errors import BadSignature
from engine.flows.providers import SIGNATURE_HEADER, SimulatedProvider
from engine.flows.wallet import Wallet, callback_secret

log = logging.getLogger("reserves.api")

# The background recovery: every this many seconds, passes until one finds less than a full
# pass of due flows, at most this many.
recover_interval_s = 1.0
recover_passes_max = 16
# Shutdown waits this long for the simulated provider's callbacks in flight.
settle_timeout_s = 5.0
SIMULATED_OUTCOMES = ("manual", "success", "failed")


def _simulated_provider() -> SimulatedProvider:
    outcome = os.environ.get("RESERVES_MOBILE_MONEY_SIMULATE", "manual").lower()
    if outcome not in SIMULATED_OUTCOMES:
        raise ValueError(f"RESERVES_MOBILE_MONEY_SIMULATE must be one of {SIMULATED_OUTCOMES}")
    delay_s = float(os.environ.get("RESERVES_MOBILE_MONEY_DELAY_S", "2"))
    if not 0 <= delay_s <= 3600:
        raise ValueError("RESERVES_MOBILE_MONEY_DELAY_S must be from 0 to 3600 seconds")
    secret = callback_secret()
    if not secret and outcome != "manual":
        # the simulator calls back in-process: a secret of its own keeps the path signed
        secret = secrets.token_bytes(32)
    refused = frozenset(n.strip() for n in os.environ.get(
        "RESERVES_MOBILE_MONEY_REFUSE", "").split(",") if n.strip())
    return SimulatedProvider(secret, outcome=outcome, delay_s=delay_s,
                             refuse=lambda r: r.phone_number in refused)


async def _recover_forever(wallet: Wallet) -> None:
    while True:
        try:
            for _ in range(recover_passes_max):
                if (await wallet.recover()).looked_at_count < flow_limits.recover_per_pass_max:
                    break
        except ReserveError as exc:
            log.warning("flows recovery: %s", exc.message)
        except Exception:
            log.exception("flows recovery failed")
        await asyncio.sleep(recover_interval_s)


async def start(ctx: ApiContext) -> None:
    provider = _simulated_provider()
    wallet = Wallet(ctx.engine, provider=provider)

    async def deliver(raw: bytes, headers: dict[str, str]) -> None:
        try:
            await wallet.mobile_money.callback(raw, headers)
        except ReserveError as exc:
            if exc.details.get("code") == "callback_too_early":
                raise  # the simulated provider delivers it again, as a real one retries
            log.warning("simulated callback: %s", exc.message)

    if provider.outcome != "manual":
        provider.sink = deliver
    ctx.extras["wallet"] = wallet
    if ctx.config.background_tasks:
        ctx.extras["wallet_recover"] = asyncio.create_task(_recover_forever(wallet))


async def stop(ctx: ApiContext) -> None:
    task = ctx.extras.pop("wallet_recover", None)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    wallet: Wallet | None = ctx.extras.pop("wallet", None)
    if wallet is not None and isinstance(wallet.provider, SimulatedProvider):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wallet.provider.settle(), settle_timeout_s)


def _wallet(ctx: ApiContext) -> Wallet:
    wallet: Wallet = ctx.extras["wallet"]
    return wallet


def _reference(body: dict[str, Any]) -> str:
    return text(body, "reference_id", length_max=engine_limits.reference_length_max)


# -- users ------------------------------------------------------------------------------------


@endpoint(Role.service)
async def deposit(request: Request, ctx: ApiContext) -> Response:
    p = request.path_params
    data = await read_object(request)
    result = await _wallet(ctx).users.deposit(p["user_id"], p["currency"],
                                              required(data, "amount"), _reference(data),
                                              request.state.audit)
    return json_response(result)


@endpoint(Role.service)
async def balances(request: Request, ctx: ApiContext) -> Response:
    return json_response(await _wallet(ctx).users.balances(request.path_params["user_id"]))


# -- quotes and swaps -------------------------------------------------------------------------


@endpoint(Role.service)
async def quote(request: Request, ctx: ApiContext) -> Response:
    q = request.query_params
    for name in ("from", "to", "amount"):
        if not q.get(name):
            raise InvalidRequest(f"query parameter {name} is required")
    given = await _wallet(ctx).quotes.create(q["from"], q["to"], q["amount"])
    return json_response({"success": True, "quote": given.to_dict()})


@endpoint(Role.service)
async def create_swap(request: Request, ctx: ApiContext) -> Response:
    data = await read_object(request)
    view = await _wallet(ctx).swaps.create(
        required(data, "user_id"), required(data, "from_currency"),
        required(data, "to_currency"), required(data, "from_amount"), _reference(data),
        data.get("quote_id"))
    return json_response({"success": True, "swap": view})


@endpoint(Role.service)
async def get_swap(request: Request, ctx: ApiContext) -> Response:
    view = await _wallet(ctx).swaps.get(request.path_params["reference_id"])
    return json_response({"success": True, "swap": view})


# -- mobile money -----------------------------------------------------------------------------


@endpoint(Role.service)
async def buy(request: Request, ctx: ApiContext) -> Response:
    data = await read_object(request)
    view = await _wallet(ctx).mobile_money.buy(
        required(data, "user_id"), required(data, "fiat_currency"),
        required(data, "crypto_currency"), required(data, "fiat_amount"),
        required(data, "phone_number"), _reference(data))
    return json_response({"success": True, "operation": view})


@endpoint(Role.service)
async def sell(request: Request, ctx: ApiContext) -> Response:
    data = await read_object(request)
    view = await _wallet(ctx).mobile_money.sell(
        required(data, "user_id"), required(data, "crypto_currency"),
        required(data, "fiat_currency"), required(data, "crypto_amount"),
        required(data, "phone_number"), _reference(data))
    return json_response({"success": True, "operation": view})


@endpoint(None)
async def callback(request: Request, ctx: ApiContext) -> Response:
    """Public: the signature over the raw body is the authentication (checked first)."""
    raw = await request.body()  # bounded by api.middleware.BodyLimit
    try:
        view = await _wallet(ctx).mobile_money.callback(raw, dict(request.headers))
    except BadSignature as exc:  # 401 without the bearer challenge: no token would help
        return error_response(exc.status_code, exc.message, code=exc.details.get("code"))
    duplicate = view.pop("duplicate_callback")
    return json_response({"success": True, "duplicate_callback": duplicate, "operation": view})


@endpoint(Role.service)
async def get_operation(request: Request, ctx: ApiContext) -> Response:
    view = await _wallet(ctx).mobile_money.get(request.path_params["reference_id"])
    return json_response({"success": True, "operation": view})


@endpoint(Role.admin, action="flow_settle")
async def settle_operation(request: Request, ctx: ApiContext) -> Response:
    """An operator settles a flagged operation: {"action": "credit" | "refunded"}."""
    ref = request.path_params["reference_id"]
    data = await read_object(request)

    async def change(meta: dict[str, Any]) -> dict[str, Any]:
        view = await _wallet(ctx).mobile_money.settle(ref, required(data, "action"), meta)
        await ctx.engine.run(ctx.engine.ops.audit(
            meta["actor"], "flow_settle", meta["ip"],
            {"request": meta["request"], "result": {"reference_id": ref,
                                                    "state": view["state"]}}))
        return view

    view = await audited(request, ctx, "flow_settle", data, change)
    return json_response({"success": True, "operation": view})


@endpoint(Role.admin)
async def flagged(request: Request, ctx: ApiContext) -> Response:
    return json_response({"success": True, "flows": await _wallet(ctx).flagged()})


_MM = "/wallet/mobile-money"

routes = [
    Route("/wallet/users/{user_id}/{currency}/deposit", deposit, methods=["POST"]),
    Route("/wallet/users/{user_id}/balances", balances, methods=["GET"]),
    Route("/wallet/quotes", quote, methods=["GET"]),
    Route("/wallet/swaps", create_swap, methods=["POST"]),
    Route("/wallet/swaps/{reference_id:reference}", get_swap, methods=["GET"]),
    Route(f"{_MM}/buy", buy, methods=["POST"]),
    Route(f"{_MM}/sell", sell, methods=["POST"]),
    Route(f"{_MM}/callback", callback, methods=["POST"]),
    Route("/wallet/flows/flagged", flagged, methods=["GET"]),
    Route(f"{_MM}/{{reference_id:reference}}/settle", settle_operation, methods=["POST"]),
    Route(f"{_MM}/{{reference_id:reference}}", get_operation, methods=["GET"]),
]


# -- OpenAPI ----------------------------------------------------------------------------------


def _obj(required_names: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required_names, "properties": props}


def _success(**props: Any) -> dict[str, Any]:
    return _obj(["success", *props], success={"const": True}, **props)


STRING = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
INTEGER = {"type": "integer"}
USER_ID = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}
CURRENCY = {"type": "string", "minLength": 1, "maxLength": 16}
PHONE = {"type": "string", "pattern": r"^[+0-9]{7,16}$"}
ERROR_OR_NULL = {"oneOf": [{"type": "null"}, ref("Error")]}

USER_BALANCE = _obj(["currency", "account_type", "total_balance", "available_balance",
                     "locked_balance", "account_number"],
                    currency=STRING, account_type={"enum": ["crypto", "fiat"]},
                    total_balance=NUMBER, available_balance=NUMBER, locked_balance=NUMBER,
                    account_number=STRING)
# A leg is a hold (api.openapi's Hold), or {"reference_id", "state": "none"} if never held, with
# its role in the flow ("from", "user", "crypto", ...).
LEG = _obj(["reference_id", "state", "role"], reference_id=STRING, role=STRING,
           state={"enum": ["none", "pending", "committed", "released", "expired"]},
           account=STRING, currency=STRING, account_type=STRING, amount=NUMBER,
           committed_amount=NUMBER, released_amount=NUMBER, operation_type=STRING,
           created_at_ms=INTEGER, expires_at_ms={"type": ["integer", "null"]},
           ended_at_ms={"type": ["integer", "null"]})
LEGS = {"type": "array", "items": LEG}
QUOTE = _obj(["quote_id", "from_currency", "to_currency", "from_amount", "to_amount", "rate",
              "spread", "expires_at_ms"],
             quote_id=STRING, from_currency=STRING, to_currency=STRING, from_amount=NUMBER,
             to_amount=NUMBER, rate=NUMBER, spread=NUMBER, expires_at_ms=INTEGER)
SWAP = _obj(["reference_id", "user_id", "state", "from_currency", "to_currency", "from_amount",
             "to_amount", "rate", "spread", "quote_id", "legs", "error"],
            reference_id=STRING, user_id=STRING,
            state={"enum": ["reserving", "executing", "rolling_back", "completed", "failed"]},
            from_currency=STRING, to_currency=STRING, from_amount=NUMBER, to_amount=NUMBER,
            rate=NUMBER, spread=NUMBER, quote_id=NULLABLE_STRING, legs=LEGS,
            error=ERROR_OR_NULL, flag=NULLABLE_STRING)
OPERATION = _obj(["reference_id", "direction", "state", "outcome", "user_id", "fiat_currency",
                  "crypto_currency", "fiat_amount", "crypto_amount", "rate", "phone_number",
                  "provider_tx_id", "expires_at_ms", "legs", "error"],
                 reference_id=STRING, direction={"enum": ["buy", "sell"]},
                 state={"enum": ["reserving", "initiating", "pending", "completed", "failed",
                                 "expired", "settlement_failed", "settled_after_expiry",
                                 "refunded"]},
                 outcome={"enum": [None, "success", "failed", "expired", "refused",
                                   "provider_error"]},
                 user_id=STRING, fiat_currency=STRING, crypto_currency=STRING,
                 fiat_amount=NUMBER, crypto_amount=NUMBER, rate=NUMBER, phone_number=STRING,
                 provider_tx_id=NULLABLE_STRING, expires_at_ms=INTEGER, legs=LEGS,
                 error=ERROR_OR_NULL, flag=NULLABLE_STRING)
FLAGGED = _obj(["kind", "reference_id", "state", "flag", "error", "updated_ms"],
               kind={"enum": ["swap", "mm"]}, reference_id=STRING, state=NULLABLE_STRING,
               flag={"enum": ["recovery_failed", "settlement_failed", "settled_after_expiry",
                              "contradicting_callback"]},
               error=ERROR_OR_NULL, updated_ms=INTEGER)
PROVIDER_FAILED = {"502": {"description": "the mobile-money provider refused or failed",
                           "content": {"application/json": {"schema": ref("Error")}}}}
REF_PARAM = [path_param("reference_id", REFERENCE)]
WRITE = (400, 404, 409, 413)


def _mm_request(amount: str) -> dict[str, Any]:
    names = ["user_id", "fiat_currency", "crypto_currency", amount, "phone_number",
             "reference_id"]
    return body(_obj(names, user_id=USER_ID, fiat_currency=CURRENCY, crypto_currency=CURRENCY,
                     phone_number=PHONE, reference_id=REFERENCE, **{amount: AMOUNT}))


openapi_paths: dict[str, Any] = {
    "/wallet/users/{user_id}/{currency}/deposit": {"post": operation(
        "Credit a user's wallet (idempotent on reference_id)", "service",
        ok(_success(user_id=STRING, currency=STRING, deposited_amount=NUMBER,
                    new_total_balance=NUMBER, available_balance=NUMBER,
                    transaction_id={"type": ["integer", "null"]},  # null: a repeat
                    applied={"type": "boolean"})),
        request=body(_obj(["amount", "reference_id"], amount=AMOUNT, reference_id=REFERENCE)),
        params=[path_param("user_id", USER_ID), path_param("currency")], errors=WRITE)},
    "/wallet/users/{user_id}/balances": {"get": operation(
        "A user's wallets, by currency", "service",
        ok(_success(user_id=STRING, balances={"type": "object",
                                              "additionalProperties": USER_BALANCE})),
        params=[path_param("user_id", USER_ID)], errors=(400, 404))},
    "/wallet/quotes": {"get": operation(
        "A price for an amount, honoured by a swap naming its quote_id until it expires",
        "service", ok(_success(quote=QUOTE)),
        params=[{"name": n, "in": "query", "required": True, "schema": s} for n, s in (
            ("from", CURRENCY), ("to", CURRENCY),
            ("amount", {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,8})?$"}))],
        errors=(400, 404))},
    "/wallet/swaps": {"post": operation(
        "Swap a user's funds between currencies through the reserves, all or nothing "
        "(idempotent on reference_id); insufficient reserve on either leg: 409", "service",
        ok(_success(swap=SWAP)),
        request=body(_obj(["user_id", "from_currency", "to_currency", "from_amount",
                           "reference_id"],
                          user_id=USER_ID, from_currency=CURRENCY, to_currency=CURRENCY,
                          from_amount=AMOUNT, reference_id=REFERENCE,
                          quote_id={"type": "string", "minLength": 1, "maxLength": 64})),
        errors=WRITE)},
    "/wallet/swaps/{reference_id}": {"get": operation(
        "A swap, its state and legs", "service", ok(_success(swap=SWAP)), params=REF_PARAM,
        errors=(400, 404))},
    f"{_MM}/buy": {"post": operation(
        "Buy crypto with fiat paid by mobile money (idempotent on reference_id)", "service",
        {**ok(_success(operation=OPERATION)), **PROVIDER_FAILED},
        request=_mm_request("fiat_amount"), errors=WRITE)},
    f"{_MM}/sell": {"post": operation(
        "Sell crypto for fiat paid out by mobile money (idempotent on reference_id)", "service",
        {**ok(_success(operation=OPERATION)), **PROVIDER_FAILED},
        request=_mm_request("crypto_amount"), errors=WRITE)},
    f"{_MM}/callback": {"post": operation(
        "The provider's result of a collection or payout: HMAC-SHA256 of the raw body with the "
        "shared secret, hex, in X-Signature; a bad signature, or a timestamp_ms more than "
        "callback_age_s_max away, is 401 and changes nothing; it counts only for the "
        "transaction the operation recorded (before that: 409 callback_too_early, retry); "
        "applied once per transaction (repeats answer duplicate_callback: true); a success "
        "after the operation expired flags it settled_after_expiry for an operator", None,
        ok(_success(duplicate_callback={"type": "boolean"}, operation=OPERATION)),
        request=body(_obj(["provider_tx_id", "reference_id", "status", "timestamp_ms"],
                          provider_tx_id=STRING, reference_id=REFERENCE,
                          status={"enum": ["success", "failed"]}, timestamp_ms=INTEGER)),
        params=[{"name": SIGNATURE_HEADER, "in": "header", "required": True,
                 "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}],
        errors=(401, 404, 409, 413, 503))},
    "/wallet/flows/flagged": {"get": operation(
        "Flows set aside for an operator, oldest first: flag recovery_failed (compensated after "
        "recovery failed for good), settlement_failed or settled_after_expiry (the provider "
        "moved money the ledger did not: settle them), contradicting_callback", "admin",
        ok(_success(flows={"type": "array", "items": FLAGGED})), errors=())},
    f"{_MM}/{{reference_id}}/settle": {"post": operation(
        "Settle a flagged operation (settlement_failed, settled_after_expiry): credit applies "
        "it if the reserve covers it (else 409 exceeds_available, nothing changed), refunded "
        "records that the provider's money went back; idempotent, audited", "admin",
        ok(_success(operation=OPERATION)),
        request=body(_obj(["action"], action={"enum": ["credit", "refunded"]})),
        params=REF_PARAM, errors=(400, 404, 409))},
    f"{_MM}/{{reference_id}}": {"get": operation(
        "A mobile-money operation and its state", "service", ok(_success(operation=OPERATION)),
        params=REF_PARAM, errors=(400, 404))},
}
