"""The `endpoint` decorator every route handler goes through: bearer token -> role -> rate
limit -> handler, errors turned into the JSON error body, metrics recorded; and the audit
data of admin changes."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from api import metrics
from api.auth import Principal, Role, bearer_token
from api.context import ApiContext
from api.errors import Forbidden, Unauthorized, reserve_error_response
from api.jsonio import error_response
from api.ratelimit import RateLimiter
from engine.drivers import UNAVAILABLE_ERRORS, unavailable
from engine.errors import ReserveError

Handler = Callable[[Request, ApiContext], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


async def authenticate(request: Request, ctx: ApiContext, role: Role) -> Principal:
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized("missing bearer token", code="unauthorized")
    principal = await ctx.tokens.resolve(token)
    if principal is None:
        raise Unauthorized("invalid token", code="unauthorized")
    if not principal.may(role):
        raise Forbidden(f"this endpoint needs the {role} role", code="forbidden")
    return principal


def endpoint(role: Role | None, name: str | None = None) -> Callable[[Handler], Endpoint]:
    """role None: public. Records reserves_http_* under `name` (default: the handler's)."""

    def wrap(handler: Handler) -> Endpoint:
        route = name or handler.__name__

        @functools.wraps(handler)
        async def run(request: Request) -> Response:
            ctx: ApiContext = request.app.state.ctx
            started = time.perf_counter()
            try:
                if role is not None:
                    principal = await authenticate(request, ctx, role)
                    request.state.principal = principal
                    wait_s = ctx.limiter.acquire(principal.digest)
                    if wait_s:
                        response = error_response(
                            429, "rate limit exceeded", {"Retry-After": RateLimiter.retry_after(wait_s)},
                            code="rate_limited")
                        return response
                response = await handler(request, ctx)
            except ReserveError as exc:
                response = reserve_error_response(exc)
            except ClientDisconnect:
                # Gone before its body was whole: nothing was read, so nothing was applied, and
                # no one is left to answer. Not an error of ours (no traceback in the log).
                response = error_response(400, "client disconnected before the body was complete",
                                          code="client_disconnected")
            except UNAVAILABLE_ERRORS as exc:  # a direct client call (caches, monitor reads)
                response = reserve_error_response(unavailable(exc))
            elapsed_s = time.perf_counter() - started
            metrics.requests.labels(route, str(response.status_code)).inc()
            metrics.latency.labels(route).observe(elapsed_s)
            metrics.window.add_response(elapsed_s, response.status_code, route)
            return response

        run.required_role = role  # type: ignore[attr-defined]
        return run

    return wrap


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def audit_meta(request: Request, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Who, from where and what: kept in the journal event of the change itself."""
    principal: Principal = request.state.principal
    return {"actor": principal.identity, "ip": client_ip(request), "action": action,
            "request": {"method": request.method, "path": request.url.path, "body": body or {}}}


async def audited(request: Request, ctx: ApiContext, action: str, body: dict[str, Any],
                  change: Callable[[dict[str, Any]], Awaitable[Any]]) -> Any:
    """Run an admin change with its audit data; a refused change is audited with its error."""
    meta = audit_meta(request, action, body)
    try:
        return await change(meta)
    except ReserveError as exc:
        if exc.status_code < 500:
            detail = {"request": meta["request"],
                      "result": {"status": exc.status_code, "error": exc.message}}
            await ctx.engine.run(ctx.engine.ops.audit(meta["actor"], f"{action}_refused",
                                                      meta["ip"], detail))
        raise
