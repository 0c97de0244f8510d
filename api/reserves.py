"""The seed's reserve endpoints under /wallet/reserves (admin, and service for check/reserve)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api import limits
from api.auth import Role
from api.context import ApiContext
from api.endpoint import audit_body, endpoint
from api.jsonio import json_response, read_object, required, text, whole_number
from api.params import query_int
from engine import limits as engine_limits
from engine.service import hold_result_dict, transfer_dict
from persistence import limits as persistence_limits
from engine.types import Balance

_SEVERITY = {"healthy": 0, "moderate": 1, "warning": 2, "critical": 3}


def status_body(balances: list[Balance]) -> dict[str, Any]:
    """The seed's status object: reserves by account type, and a summary."""
    groups: dict[str, dict[str, Any]] = {"crypto": {}, "fiat": {}}
    critical: list[str] = []
    warning: list[str] = []
    worst = "healthy"
    for b in balances:
        groups.setdefault(b.account.currency.account_type.value, {})[b.account.currency.code] = b.to_dict()
        if b.status == "critical":
            critical.append(b.account.currency.code)
        elif b.status == "warning":
            warning.append(b.account.currency.code)
        if _SEVERITY[b.status] > _SEVERITY[worst]:
            worst = b.status
    return {**groups, "summary": {"overall_status": worst, "critical_reserves": critical,
                                  "warning_reserves": warning}}


async def _with_forecast(ctx: ApiContext, balance: Balance) -> dict[str, Any]:
    body = balance.to_dict()
    if ctx.monitor is not None:
        body["forecast"] = await ctx.monitor.forecast(balance)
    return body


@endpoint(Role.admin)
async def reserves_status(request: Request, ctx: ApiContext) -> Response:
    async def build() -> dict[str, Any]:
        balances = await ctx.engine.all_reserve_balances()
        body = status_body(balances)
        if ctx.monitor is not None:
            for b in balances:
                group = body[b.account.currency.account_type.value]
                group[b.account.currency.code]["forecast"] = await ctx.monitor.forecast(b)
        return body

    return json_response({"success": True, "reserves": await ctx.status_cache.get(build)})


@endpoint(Role.admin)
async def reserve_balance(request: Request, ctx: ApiContext) -> Response:
    p = request.path_params
    balance = await ctx.engine.get_reserve_balance(p["currency"], p["account_type"])
    return json_response({"success": True, "reserve": await _with_forecast(ctx, balance)})


async def _transfer(request: Request, ctx: ApiContext, reference_field: str, verb: str,
                    move: Any) -> Response:
    """A top-up or withdrawal: validated, audited, answered in the seed's shape."""
    p = request.path_params
    body = await read_object(request)
    amount = required(body, "amount")
    reference = text(body, reference_field, length_max=engine_limits.reference_length_max)
    meta = audit_body(request, {"amount": str(amount), reference_field: reference})
    result = await move(p["currency"], amount, p["account_type"], reference, meta)
    return json_response(transfer_dict(result, verb))


@endpoint(Role.admin, action="reserve_topup")
async def top_up(request: Request, ctx: ApiContext) -> Response:
    return await _transfer(request, ctx, "source_reference", "topped_up",
                           ctx.engine.top_up_reserve)


@endpoint(Role.admin, action="reserve_withdrawal")
async def withdraw(request: Request, ctx: ApiContext) -> Response:
    return await _transfer(request, ctx, "destination_reference", "withdrawn",
                           ctx.engine.withdraw_from_reserve)


@endpoint(Role.admin)
async def analytics(request: Request, ctx: ApiContext) -> Response:
    from persistence.analytics import reserve_analytics

    period_days = query_int(request, "period_days", limits.period_days_default,
                            persistence_limits.period_days_min, persistence_limits.period_days_max)
    # SQLAlchemy is synchronous: keep the event loop free while Postgres answers.
    data = await asyncio.to_thread(reserve_analytics, ctx.settings.database_url, period_days,
                                   ctx.engine.registry)
    return json_response({"success": True, "analytics": data})


@endpoint(Role.admin)
async def cache_clear(request: Request, ctx: ApiContext) -> Response:
    meta = audit_body(request, {})
    ctx.clear_caches()
    await ctx.engine.run(ctx.engine.ops.audit(
        meta["actor"], "cache_clear", meta["ip"],
        {"request": meta["request"], "result": {"applied": True}}))
    return json_response({"success": True, "message": "Reserve caches cleared"})


@endpoint(Role.service, changes=False)
async def check(request: Request, ctx: ApiContext) -> Response:
    p = request.path_params
    body = await read_object(request)
    operation_type = text(body, "operation_type", default="check",
                          length_max=engine_limits.operation_type_length_max)
    result = await ctx.engine.check_reserve_sufficiency(
        p["currency"], required(body, "amount"), p["account_type"], operation_type)
    return json_response({"success": True, **result})


@endpoint(Role.service)
async def reserve(request: Request, ctx: ApiContext) -> Response:
    p = request.path_params
    body = await read_object(request)
    amount = required(body, "amount")
    reference = text(body, "reference_id", length_max=engine_limits.reference_length_max)
    operation_type = text(body, "operation_type",
                          length_max=engine_limits.operation_type_length_max)
    ttl_s = whole_number(body, "ttl_seconds", engine_limits.hold_ttl_s_min,
                         engine_limits.hold_ttl_s_max)
    result = await ctx.engine.reserve_amount(p["currency"], amount, p["account_type"], reference,
                                             operation_type, ttl_s, request.state.audit)
    return json_response(hold_result_dict(result))


_ACCOUNT = "/wallet/reserves/{currency}/{account_type}"

routes = [
    Route("/wallet/reserves/status", reserves_status, methods=["GET"]),
    Route("/wallet/reserves/analytics", analytics, methods=["GET"]),
    Route("/wallet/reserves/cache/clear", cache_clear, methods=["POST"]),
    Route(f"{_ACCOUNT}/balance", reserve_balance, methods=["GET"]),
    Route(f"{_ACCOUNT}/topup", top_up, methods=["POST"]),
    Route(f"{_ACCOUNT}/withdraw", withdraw, methods=["POST"]),
    Route(f"{_ACCOUNT}/check", check, methods=["POST"]),
    Route(f"{_ACCOUNT}/reserve", reserve, methods=["POST"]),
]
