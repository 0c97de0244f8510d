"""HTTP-only errors, and the one place any error becomes the JSON error body."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.jsonio import error_response
from engine.errors import ReserveError

log = logging.getLogger("reserves.api")


class Unauthorized(ReserveError):
    status_code = 401


class Forbidden(ReserveError):
    status_code = 403


def reserve_error_response(exc: ReserveError) -> Response:
    if exc.status_code >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message)
    body = exc.to_dict()
    bearer = exc.status_code == 401 and isinstance(exc, Unauthorized)
    headers = {"WWW-Authenticate": "Bearer"} if bearer else None
    return error_response(exc.status_code, body.pop("error"), headers,
                          **{k: v for k, v in body.items() if k != "success"})


async def on_reserve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ReserveError)
    return reserve_error_response(exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail or "error", exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error")


handlers = {ReserveError: on_reserve_error, HTTPException: on_http_error, Exception: on_unexpected}
