"""The admin dashboard and its data: GET /dashboard (a public page that asks for the admin token
and keeps it in sessionStorage), its static assets (shipped in api/static, no CDN), and the
admin JSON endpoints it polls:

    GET /wallet/reserves/dashboard            every reserve with balances, forecast, chart points
    GET /wallet/reserves/alerts?limit=N       open alerts and the newest N of their history
    GET /wallet/reserves/recent?limit=N       the newest transactions: the database's, and
                                              the streams' not yet persisted

Alerts and utilization samples are the app's monitor's (ctx.monitor); without a running monitor
(background tasks off) the same Redis books are read directly, so the data is still there.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from api.auth import Role
from api.context import ApiContext
from api.endpoint import endpoint
from api.jsonio import json_response
from api.liquidity import REQUEST as LIQUIDITY_REQUEST
from api.liquidity import recent_requests
from api.openapi import NUMBER, _obj, _success, ok, operation, ref
from api.params import query_int
from engine.errors import ReserveError
from engine.journal import JournalEvent
from engine.money import from_minor
from engine.monitoring import limits
from engine.monitoring.alerts import ALERT_KINDS, AlertBook
from engine.monitoring.forecast import SampleBook
from persistence.recent import RecentRow, recent_transactions

log = logging.getLogger("reserves.api")
STATIC_DIR = str(resources.files("api").joinpath("static"))


def _books(ctx: ApiContext) -> tuple[AlertBook, SampleBook]:
    if ctx.monitor is not None:
        return ctx.monitor.alerts, ctx.monitor.samples
    books = ctx.extras.get("dashboard_books")
    if books is None:
        ops = ctx.engine.ops
        books = (AlertBook(ctx.engine.client, ops.keys, ops.clock_ms),
                 SampleBook(ctx.engine.client, ops.keys, ops.clock_ms))
        ctx.extras["dashboard_books"] = books
    return books  # type: ignore[no-any-return]


def _ms(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def alert_view(record: dict[str, Any]) -> dict[str, Any]:
    """An alert record as the API shows it: the script keeps ids and times as strings."""
    return {"id": int(record["id"]), "key": record["key"], "account": record["account"],
            "kind": record["kind"], "level": record["level"], "message": record["message"],
            "value": str(record.get("value", "")), "state": record["state"],
            "raised_ms": _ms(record.get("raised_ms")), "cleared_ms": _ms(record.get("cleared_ms"))}


@endpoint(Role.admin)
async def dashboard_data(request: Request, ctx: ApiContext) -> Response:
    alerts, samples = _books(ctx)
    reserves = []
    for balance in await ctx.engine.all_reserve_balances():
        label = balance.account.label
        reserves.append({"label": label, **balance.to_dict(),
                         "forecast": await samples.forecast(balance),
                         "history": await samples.history(label)})
    return json_response({"success": True, "reserves": reserves,
                          "alerts": [alert_view(a) for a in await alerts.open_alerts()],
                          "liquidity_requests": await recent_requests(ctx),
                          "now_ms": ctx.engine.ops.clock_ms()})


@endpoint(Role.admin)
async def alerts_list(request: Request, ctx: ApiContext) -> Response:
    limit = query_int(request, "limit", 50, 1, limits.history_count_max)
    alerts, _ = _books(ctx)
    return json_response({"success": True,
                          "alerts": [alert_view(a) for a in await alerts.open_alerts()],
                          "history": [alert_view(a) for a in await alerts.history(limit)]})


def _decimals(ctx: ApiContext, label: str) -> int | None:
    try:
        return ctx.engine.ops.spec_of_label(label).currency.decimals
    except ReserveError:
        return None


async def _ledger_rows(ctx: ApiContext, limit: int) -> list[RecentRow]:
    """The persisted ones (the streams are trimmed below them); [] while the database is out:
    the page still shows what Redis holds."""
    try:
        return await asyncio.to_thread(recent_transactions, ctx.settings.database_url, limit)
    except ReserveError as exc:
        log.warning("dashboard: recent transactions from the database unavailable: %s",
                    exc.message)
        return []


@endpoint(Role.admin)
async def recent(request: Request, ctx: ApiContext) -> Response:
    limit = query_int(request, "limit", limits.recent_count_default, 1,
                      limits.recent_count_max)
    client, keys = ctx.engine.client, ctx.engine.ops.keys
    rows: dict[int, RecentRow] = {}
    for stream in keys.streams():
        for i, f in await client.xrevrange(stream, count=limit):
            e = JournalEvent.parse(i, f)
            rows[e.event_id] = RecentRow(e.event_id, e.op, e.account, e.reference,
                                         e.amount_minor, e.ts_ms)
    for row in await _ledger_rows(ctx, limit):
        rows.setdefault(row.event_id, row)
    newest = sorted(rows.values(), key=lambda r: (r.ts_ms, r.event_id), reverse=True)[:limit]
    out = []
    for r in newest:
        decimals = _decimals(ctx, r.account) if r.account else None
        amount = from_minor(r.amount_minor, decimals) if decimals is not None else None
        out.append({"transaction_id": r.event_id, "operation": r.operation,
                    "account": r.account, "reference": r.reference, "amount": amount,
                    "ts_ms": r.ts_ms})
    return json_response({"success": True, "transactions": out})


@endpoint(None, "dashboard_page")
async def page(request: Request, ctx: ApiContext) -> Response:
    html = resources.files("api").joinpath("static/dashboard/index.html").read_text("utf-8")
    return HTMLResponse(html)


routes: list[Any] = [
    Route("/dashboard", page, methods=["GET"]),
    Mount("/dashboard/static", app=StaticFiles(directory=STATIC_DIR), name="dashboard-static"),
    Route("/wallet/reserves/dashboard", dashboard_data, methods=["GET"]),
    Route("/wallet/reserves/alerts", alerts_list, methods=["GET"]),
    Route("/wallet/reserves/recent", recent, methods=["GET"]),
]

# -- OpenAPI -----------------------------------------------------------------------------------

_SECONDS = {"type": ["integer", "null"], "minimum": 0,
            "description": "estimate; null: not draining"}
FORECAST = _obj(
    ["net_outflow_per_hour", "window_s", "windows", "seconds_to_warning", "seconds_to_empty",
     "target_utilization_percentage", "suggested_top_up"],
    net_outflow_per_hour=NUMBER, window_s={"type": ["integer", "null"]},
    windows={"type": "array", "items": _obj(
        ["window_s", "net_outflow_per_hour", "samples_count"], window_s={"type": "integer"},
        net_outflow_per_hour={"type": ["number", "null"]}, samples_count={"type": "integer"})},
    seconds_to_warning=_SECONDS, seconds_to_empty=_SECONDS,
    target_utilization_percentage=NUMBER, suggested_top_up=NUMBER)
ALERT = _obj(
    ["id", "key", "account", "kind", "level", "message", "value", "state", "raised_ms",
     "cleared_ms"],
    id={"type": "integer"}, key={"type": "string"}, account={"type": "string"},
    kind={"enum": list(ALERT_KINDS)},
    level={"enum": ["warning", "critical", "emergency"]}, message={"type": "string"},
    value={"type": "string"}, state={"enum": ["open", "cleared"]},
    raised_ms={"type": ["integer", "null"]}, cleared_ms={"type": ["integer", "null"]})
_POINT = {"type": "array", "items": NUMBER, "minItems": 2, "maxItems": 2,
          "description": "[ms since the epoch, utilization %]"}
DASHBOARD_RESERVE = {"allOf": [ref("Reserve"), _obj(
    ["label", "forecast", "history"], label={"type": "string"}, forecast=FORECAST,
    history={"type": "array", "items": _POINT, "maxItems": limits.history_points_max})]}
TRANSACTION = _obj(
    ["transaction_id", "operation", "account", "reference", "amount", "ts_ms"],
    transaction_id={"type": "integer"}, operation={"type": "string"},
    account={"type": "string"}, reference={"type": "string"},
    amount={"type": ["number", "null"], "description": "null: not an account's money event"},
    ts_ms={"type": "integer"})


def _limit_param(default: int, maximum: int) -> list[dict[str, Any]]:
    return [{"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": maximum,
                        "default": default}}]


openapi_paths: dict[str, Any] = {
    "/wallet/reserves/dashboard": {"get": operation(
        "Every reserve with its forecast and utilization samples, and the open alerts", "admin",
        ok(_success(reserves={"type": "array", "items": DASHBOARD_RESERVE},
                    alerts={"type": "array", "items": ALERT},
                    liquidity_requests={"type": "array", "items": LIQUIDITY_REQUEST},
                    now_ms={"type": "integer"})))},
    "/wallet/reserves/alerts": {"get": operation(
        "Open alerts, and the newest raised and cleared ones (newest first)", "admin",
        ok(_success(alerts={"type": "array", "items": ALERT},
                    history={"type": "array", "items": ALERT})),
        params=_limit_param(50, limits.history_count_max), errors=(400,))},
    "/wallet/reserves/recent": {"get": operation(
        "The newest transactions (journal events), persisted or not, newest first", "admin",
        ok(_success(transactions={"type": "array", "items": TRANSACTION})),
        params=_limit_param(limits.recent_count_default, limits.recent_count_max),
        errors=(400,))},
}
