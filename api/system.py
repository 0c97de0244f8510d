"""Public endpoints: /health, /metrics, /openapi.json and the /docs page."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from api import metrics
from api.context import ApiContext
from api.endpoint import endpoint
from api.jsonio import error_response, json_response
from engine.errors import ReserveError

log = logging.getLogger("reserves.api")


@endpoint(None)
async def health(request: Request, ctx: ApiContext) -> Response:
    try:
        await asyncio.wait_for(ctx.engine.client.ping(), timeout=2.0)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return error_response(503, f"Redis is unavailable: {type(exc).__name__}",
                              code="redis_unavailable")
    problem = await ledger_problem(ctx)
    if problem is not None:
        return error_response(503, problem[1], code=problem[0])
    return json_response({"status": "ok"})


async def ledger_problem(ctx: ApiContext) -> tuple[str, str] | None:
    """(code, message) when the ledger needs an operator: Redis lost its state (no generation
    marker or a shard's event counter: writes answer 503 ledger_not_loaded until `reserves
    rebuild`), or the persister stopped on a divergence between Redis and the ledger."""
    client, keys = ctx.engine.client, ctx.engine.ops.keys
    divergence = await client.get(keys.divergence())
    if divergence:
        return ("ledger_diverged", "The persister stopped: the journal and the ledger disagree "
                f"on an event ({divergence}); see the persister's log")
    if not ctx.engine.settings.ledger_guard:  # a bare engine starts a lost Redis afresh
        return None
    present = [await client.exists(keys.generation())]
    present += [await client.exists(keys.seq(shard)) for shard in range(keys.shard_count)]
    if not all(present):
        return ("ledger_not_loaded", "Redis does not hold the ledger (its data was lost); "
                "writes are refused until an operator runs `reserves rebuild`")
    return None


async def refresh_gauges(ctx: ApiContext) -> None:
    try:
        problem = await ledger_problem(ctx)
    except Exception as exc:  # noqa: BLE001 - metrics must not fail on a Redis hiccup
        log.warning("metrics: ledger state unavailable: %s", exc)
    else:
        for code in ("ledger_not_loaded", "ledger_diverged"):
            metrics.ledger_problem.labels(code).set(1 if problem and problem[0] == code else 0)
    try:
        for b in await ctx.engine.all_reserve_balances():
            label = b.account.label
            metrics.balance.labels(label, "total").set(float(b.major(b.total_minor)))
            metrics.balance.labels(label, "available").set(float(b.major(b.available_minor)))
            metrics.balance.labels(label, "locked").set(float(b.major(b.locked_minor)))
            metrics.utilization.labels(label).set(float(b.utilization_percentage))
    except ReserveError as exc:
        log.warning("metrics: balances unavailable: %s", exc.message)
    lag = await journal_lag(ctx)
    if lag is not None:
        metrics.journal_length.set(lag["stream_length"])
        metrics.journal_pending.set(lag["pending"])
        metrics.journal_unread.set(lag["unread"])
        metrics.journal_oldest_s.set(lag["oldest_unpersisted_age_s"])


async def journal_lag(ctx: ApiContext) -> dict[str, float] | None:
    """The persister's lag totals (read from Redis: any process can tell)."""
    reader = ctx.extras.get("lag_reader")
    if reader is None:
        from engine.connection import sync_client
        from persistence.worker import Persister

        reader = Persister(sync_client(ctx.settings), ctx.settings, ctx.settings.database_url)
        ctx.extras["lag_reader"] = reader
    try:
        return (await asyncio.to_thread(reader.lag))["total"]
    except Exception as exc:  # noqa: BLE001 - metrics must not fail on a Redis hiccup
        log.warning("metrics: journal lag unavailable: %s", exc)
        return None


@endpoint(None)
async def prometheus(request: Request, ctx: ApiContext) -> Response:
    await refresh_gauges(ctx)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def openapi_json(request: Request) -> Response:
    return json_response(request.app.state.openapi)


def _docs_html() -> str:
    return """<!doctype html>
<html><head><meta charset="utf-8"><title>reserves API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/static/swagger-ui-init.js"></script>
</body></html>"""


async def docs(request: Request) -> Response:
    return HTMLResponse(_docs_html())


async def docs_init(request: Request) -> Response:
    # A file, not inline script, so that a strict Content-Security-Policy can stay on.
    return Response('window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});',
                    media_type="application/javascript")


def _swagger_dir() -> str:
    from swagger_ui_bundle import swagger_ui_path

    return str(swagger_ui_path)


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/metrics", prometheus, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"], include_in_schema=False),
    Route("/docs", docs, methods=["GET"], include_in_schema=False),
    Route("/docs/static/swagger-ui-init.js", docs_init, methods=["GET"]),
    Mount("/docs/static", app=StaticFiles(directory=_swagger_dir()), name="docs-static"),
]
