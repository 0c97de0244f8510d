"""The `endpoint` decorator every route handler goes through: bearer token -> rate limit ->
role -> handler, errors turned into the JSON error body, metrics recorded; and the audit of
every change and every refused change."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from api import limits, metrics
from api.auth import Principal, Role, bearer_token
from api.context import ApiContext
from api.errors import Forbidden, Unauthorized, reserve_error_response
from api.jsonio import error_response, parse_json
from api.ratelimit import RateLimiter
from engine.drivers import UNAVAILABLE_ERRORS, unavailable
from engine.errors import ReserveError

log = logging.getLogger("reserves.api")

Handler = Callable[[Request, ApiContext], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


async def resolve(request: Request, ctx: ApiContext) -> Principal:
    """The principal of the bearer token; its role is checked after the rate limit, so that a
    refused call (audited) counts against the token's rate."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized("missing bearer token", code="unauthorized")
    principal = await ctx.tokens.resolve(token)
    if principal is None:
        raise Unauthorized("invalid token", code="unauthorized")
    return principal


def endpoint(role: Role | None, name: str | None = None, action: str | None = None,
             changes: bool | None = None) -> Callable[[Handler], Endpoint]:
    """role None: public. Records reserves_http_* under `name` (default: the handler's). A call
    that may change something (any method but GET) of a route with a role is audited under
    `action` (default: `name`): applied, through the audit data the handler passes to the
    engine (request.state.audit, kept in the change's own journal event); refused (4xx but
    429), by an `audit` event written here. changes=False: a POST that only reads."""

    def wrap(handler: Handler) -> Endpoint:
        route = name or handler.__name__
        audited_as = action or route

        @functools.wraps(handler)
        async def run(request: Request) -> Response:
            ctx: ApiContext = request.app.state.ctx
            started = time.perf_counter()
            audit = role is not None and (request.method != "GET" if changes is None
                                          else changes)
            principal: Principal | None = None
            try:
                if role is not None:
                    principal = await resolve(request, ctx)
                    wait_s = ctx.limiter.acquire(principal.digest)
                    if wait_s:
                        response = error_response(
                            429, "rate limit exceeded", {"Retry-After": RateLimiter.retry_after(wait_s)},
                            code="rate_limited")
                        return response
                    request.state.principal = principal
                    if audit:
                        request.state.audit = audit_meta(request, principal, audited_as, route)
                    if not principal.may(role):
                        raise Forbidden(f"this endpoint needs the {role} role", code="forbidden")
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
            if audit and 400 <= response.status_code < 500 and response.status_code != 429:
                await audit_refusal(request, ctx, principal, audited_as, route, response)
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


def audit_meta(request: Request, principal: Principal, action: str,
               route: str) -> dict[str, Any]:
    """Who, from where and what: kept in the journal event of the change itself (no extra
    Redis call on the hot path). A handler adds the request body with audit_body()."""
    request_meta: dict[str, Any] = {"method": request.method, "path": request.url.path,
                                    "route": route, "role": principal.role.value}
    return {"actor": principal.identity, "ip": client_ip(request), "action": action,
            "request": request_meta}


def audit_body(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """The audit data of this request, now with the (validated) body it carries."""
    meta: dict[str, Any] = request.state.audit
    meta["request"]["body"] = body
    return meta


async def audited(request: Request, ctx: ApiContext, action: str, body: dict[str, Any],
                  change: Callable[[dict[str, Any]], Awaitable[Any]]) -> Any:
    """Run a change with its audit data (the request's, with this body); should it be refused,
    `endpoint` audits the refusal (under the endpoint's `action`)."""
    return await change(audit_body(request, body))


async def audit_refusal(request: Request, ctx: ApiContext, principal: Principal | None,
                        action: str, route: str, response: Response) -> None:
    """A refused change as an `audit` event: {"request", "result": {"status", "code", "error"}}.
    One refused before any token was recognised (401) only up to a rate per process, so that no
    one without a token can grow the journal at will (the rest are counted in
    reserves_http_requests_total)."""
    if principal is None:
        bucket = ctx.extras.get("unauthenticated_audits")
        if bucket is None:
            bucket = ctx.extras["unauthenticated_audits"] = RateLimiter(
                limits.unauthenticated_audit_per_s, limits.unauthenticated_audit_burst)
        if bucket.acquire(""):
            return
        meta = {"actor": "", "ip": client_ip(request), "action": action,
                "request": {"method": request.method, "path": request.url.path, "route": route,
                            "role": ""}}
    else:
        meta = getattr(request.state, "audit", None) or audit_meta(request, principal, action,
                                                                   route)
    try:
        answer = json.loads(bytes(response.body))
    except ValueError:
        answer = {}
    result = {"status": response.status_code, "code": answer.get("code"),
              "error": answer.get("error")}
    body = meta["request"].get("body")
    if body is None:  # refused before the handler took what it needs: what the body says
        sent = getattr(request.state, "json_body", None)
        if sent is None:  # refused before it was read (401, 403)
            sent = await _body_if_json(request)
        sent = sent if isinstance(sent, dict) else {}
        body = {f: str(sent[f])[:_FIELD_CHARS_MAX] for f in _BODY_FIELDS if f in sent}
    reference = request.path_params.get("reference_id") or next(
        (body[f] for f in _REFERENCE_FIELDS if isinstance(body.get(f), str)), "")
    detail = {"request": {**meta["request"], "body": body}, "result": result,
              "reference": str(reference)[:_FIELD_CHARS_MAX]}
    try:
        await ctx.engine.run(ctx.engine.ops.audit(meta["actor"], f"{action}_refused",
                                                  meta["ip"], detail))
    except ReserveError as exc:  # Redis is out: the refusal stands, its record is lost
        log.warning("audit of a refused %s not journalled: %s", action, exc.message)


async def _body_if_json(request: Request) -> Any:
    try:
        return parse_json(await request.body())  # bounded by api.middleware.BodyLimit
    except (ReserveError, ClientDisconnect):
        return None


_REFERENCE_FIELDS = ("reference_id", "source_reference", "destination_reference")
# The body fields a refused change's record keeps (each cut to a length): not the whole body.
_BODY_FIELDS = ("amount", *_REFERENCE_FIELDS, "operation_type", "ttl_seconds", "user_id",
                "from_currency", "to_currency", "from_amount", "currency")
_FIELD_CHARS_MAX = 128
