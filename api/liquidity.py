"""Automated top-ups over HTTP: the policies and requests (admin), and the liquidity provider's
signed callback (public: the signature is the authentication).

    GET  /wallet/reserves/policies                  the policies and the newest requests
    GET  /wallet/reserves/liquidity/requests?limit=N the newest requests (flagged ones included)
    POST /wallet/reserves/liquidity/requests/{reference_id}/dismiss
                                                    an operator closes a flagged request
    POST /wallet/reserves/liquidity/callback        the provider's answer, HMAC-signed

Configuration (environment):

    RESERVES_LIQUIDITY_POLICIES   the policies file (TOML; example:
                                  engine/liquidity/policies.example.toml); none: no policy
    RESERVES_LIQUIDITY_SECRET     shared secret of the callback signatures (none: callbacks 401)
    RESERVES_LIQUIDITY_SIMULATE   the built-in simulated provider: manual (default: no callback
                                  of its own), success or failed (calls back after a delay)
    RESERVES_LIQUIDITY_DELAY_S    that delay (2)

The manager lives in ctx.extras["liquidity"]; with background tasks on, its pass runs every
engine.liquidity.limits.check_interval_s.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from api.jsonio import error_response, json_response
from api.openapi import NUMBER, REFERENCE, _obj, _success, body, ok, operation, path_param
from api.params import query_int
from engine.errors import InvalidRequest
from engine.flows.errors import BadSignature
from engine.liquidity import limits
from engine.liquidity.manager import LiquidityManager
from engine.liquidity.policy import PolicySet
from engine.liquidity.provider import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SimulatedLiquidityProvider,
    callback_secret,
)
from engine.registry import CurrencyRegistry

SIMULATED_OUTCOMES = ("manual", "success", "failed")
settle_timeout_s = 5.0


def load_policies(registry: CurrencyRegistry) -> PolicySet:
    """RESERVES_LIQUIDITY_POLICIES, or no policy; a bad file raises PolicyError (file, field)."""
    path = os.environ.get("RESERVES_LIQUIDITY_POLICIES")
    return PolicySet.load(path, registry) if path else PolicySet.empty()


def simulated_provider() -> SimulatedLiquidityProvider:
    outcome = os.environ.get("RESERVES_LIQUIDITY_SIMULATE", "manual").lower()
    if outcome not in SIMULATED_OUTCOMES:
        raise ValueError(f"RESERVES_LIQUIDITY_SIMULATE must be one of {SIMULATED_OUTCOMES}")
    delay_s = float(os.environ.get("RESERVES_LIQUIDITY_DELAY_S", "2"))
    if not 0 <= delay_s <= 3600:
        raise ValueError("RESERVES_LIQUIDITY_DELAY_S must be from 0 to 3600 seconds")
    secret = callback_secret()
    if not secret and outcome != "manual":
        secret = secrets.token_bytes(32)  # it calls back in-process: keep the path signed
    return SimulatedLiquidityProvider(secret, outcome=outcome, delay_s=delay_s)


async def start(ctx: ApiContext) -> None:
    from api.app import _every
    from engine.monitoring.alerts import AlertBook

    policies = load_policies(ctx.engine.registry)
    provider = simulated_provider()
    ops = ctx.engine.ops
    alerts = (ctx.monitor.alerts if ctx.monitor is not None
              else AlertBook(ctx.engine.client, ops.keys, ops.clock_ms))
    manager = LiquidityManager(ctx.engine, policies, provider, alerts=alerts)

    async def deliver(raw: bytes, headers: dict[str, str]) -> None:
        with contextlib.suppress(Exception):  # the simulator's own callback: best effort
            await manager.callback(raw, headers)

    if provider.outcome != "manual":
        provider.sink = deliver
    ctx.extras["liquidity"] = manager
    if ctx.config.background_tasks:
        ctx.extras["liquidity_task"] = asyncio.create_task(
            _every(limits.check_interval_s, "liquidity", manager.tick))


async def stop(ctx: ApiContext) -> None:
    task = ctx.extras.pop("liquidity_task", None)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    manager: LiquidityManager | None = ctx.extras.pop("liquidity", None)
    if manager is not None and isinstance(manager.provider, SimulatedLiquidityProvider):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(manager.provider.settle(), settle_timeout_s)


def _manager(ctx: ApiContext) -> LiquidityManager:
    manager: LiquidityManager = ctx.extras["liquidity"]
    return manager


def _limit(request: Request) -> int:
    return query_int(request, "limit", limits.requests_listed_default, 1,
                     limits.requests_listed_max)


async def recent_requests(ctx: ApiContext,
                          count: int = limits.requests_listed_default) -> list[dict[str, Any]]:
    """For the dashboard: [] when the module is not running."""
    manager: LiquidityManager | None = ctx.extras.get("liquidity")
    return await manager.recent(count) if manager is not None else []


@endpoint(Role.admin)
async def policies(request: Request, ctx: ApiContext) -> Response:
    manager = _manager(ctx)
    return json_response({"success": True, "path": manager.policies.path,
                          "policies": [p.to_dict() for p in manager.policies],
                          "requests": await manager.recent(_limit(request))})


@endpoint(Role.admin)
async def requests(request: Request, ctx: ApiContext) -> Response:
    return json_response({"success": True,
                          "requests": await _manager(ctx).recent(_limit(request))})


@endpoint(Role.admin)
async def dismiss(request: Request, ctx: ApiContext) -> Response:
    reference = request.path_params["reference_id"]

    async def change(meta: dict[str, Any]) -> dict[str, Any]:
        return await _manager(ctx).dismiss(reference, meta["actor"], meta["ip"])

    view = await audited(request, ctx, "liquidity_dismiss", {"reference_id": reference}, change)
    return json_response({"success": True, "request": view})


@endpoint(None, "liquidity_callback")
async def callback(request: Request, ctx: ApiContext) -> Response:
    """Public: the signature over the timestamp and raw body is the authentication."""
    raw = await request.body()  # bounded by api.middleware.BodyLimit
    try:
        result = await _manager(ctx).callback(raw, dict(request.headers))
    except BadSignature as exc:  # 401 without the bearer challenge: no token would help
        return error_response(exc.status_code, exc.message, code=exc.details.get("code"))
    return json_response({"success": True, **result})


routes = [
    Route("/wallet/reserves/policies", policies, methods=["GET"]),
    Route("/wallet/reserves/liquidity/requests", requests, methods=["GET"]),
    Route("/wallet/reserves/liquidity/requests/{reference_id:reference}/dismiss", dismiss,
          methods=["POST"]),
    Route("/wallet/reserves/liquidity/callback", callback, methods=["POST"]),
]

# -- OpenAPI -----------------------------------------------------------------------------------

_INT_OR_NULL = {"type": ["integer", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
POLICY = _obj(
    ["account", "currency", "account_type", "utilization_pct", "seconds_to_empty_max", "amount",
     "daily_cap", "window_s"],
    account={"type": "string"}, currency={"type": "string"},
    account_type={"enum": ["crypto", "fiat"]}, utilization_pct=_INT_OR_NULL,
    seconds_to_empty_max=_INT_OR_NULL,
    amount={"type": ["number", "null"], "description": "null: the forecast's suggested top-up"},
    daily_cap=NUMBER, window_s={"type": "integer"})
REQUEST = _obj(
    ["reference_id", "account", "currency", "account_type", "state", "amount", "reason",
     "attempts", "last_error", "provider_tx_id", "transaction_id", "created_ms", "updated_ms",
     "next_attempt_ms"],
    reference_id={"type": "string"}, account={"type": "string"}, currency={"type": "string"},
    account_type={"type": "string"},
    state={"enum": ["requested", "pending", "confirmed", "completed", "failed", "flagged",
                    "dismissed"]},
    amount=NUMBER, reason={"type": "string"}, attempts={"type": "integer"},
    last_error=_STR_OR_NULL, provider_tx_id=_STR_OR_NULL, transaction_id=_INT_OR_NULL,
    created_ms=_INT_OR_NULL, updated_ms=_INT_OR_NULL, next_attempt_ms=_INT_OR_NULL)
_LIMIT = [{"name": "limit", "in": "query", "required": False,
           "schema": {"type": "integer", "minimum": 1, "maximum": limits.requests_listed_max,
                      "default": limits.requests_listed_default}}]

openapi_paths: dict[str, Any] = {
    "/wallet/reserves/policies": {"get": operation(
        "The automated top-up policies, and the newest liquidity requests", "admin",
        ok(_success(path=_STR_OR_NULL, policies={"type": "array", "items": POLICY},
                    requests={"type": "array", "items": REQUEST})),
        params=_LIMIT, errors=(400,))},
    "/wallet/reserves/liquidity/requests": {"get": operation(
        "The newest liquidity requests, newest first (flagged ones need an operator)", "admin",
        ok(_success(requests={"type": "array", "items": REQUEST})),
        params=_LIMIT, errors=(400,))},
    "/wallet/reserves/liquidity/requests/{reference_id}/dismiss": {"post": operation(
        "Close a flagged liquidity request (the operator sees to the reserve): its amount goes "
        "back to the day's cap, its alert clears; 409 unless it is flagged", "admin",
        ok(_success(request=REQUEST)), params=[path_param("reference_id", REFERENCE)],
        errors=(400, 404, 409))},
    "/wallet/reserves/liquidity/callback": {"post": operation(
        "The liquidity provider's answer to a request: HMAC-SHA256 over '<X-Timestamp>.' and "
        "the raw body with the shared secret, hex, in X-Signature; the timestamp within "
        f"{limits.callback_window_s} s of the server's clock; a bad signature or timestamp is "
        "401 and changes nothing. A success tops the reserve up once (repeats answer "
        "duplicate_callback: true)", None,
        ok(_success(duplicate_callback={"type": "boolean"}, request=REQUEST)),
        request=body(_obj(["provider_tx_id", "reference_id", "status"],
                          provider_tx_id={"type": "string"}, reference_id=REFERENCE,
                          status={"enum": ["success", "failed"]})),
        params=[{"name": SIGNATURE_HEADER, "in": "header", "required": True,
                 "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
                {"name": TIMESTAMP_HEADER, "in": "header", "required": True,
                 "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"}}],
        errors=(401, 404, 409, 413, 503))},
}
