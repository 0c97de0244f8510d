"""JSON in and out with exact amounts: numbers are parsed straight to Decimal (never through
float) and Decimals are written as JSON numbers the way the seed shows them (10000.0)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api import limits
from engine.errors import InvalidRequest
from engine.money import exact_json


def json_response(data: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(exact_json(data), status_code=status_code, media_type="application/json",
                    headers=headers)


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> Response:
    return json_response({"success": False, "error": message, **extra}, status_code, headers)


def _refuse_constant(name: str) -> Any:
    raise InvalidRequest(f"malformed JSON: {name} is not a number", code="malformed_json")


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > limits.json_int_digits_max:
        raise InvalidRequest(f"malformed JSON: an integer of more than "
                             f"{limits.json_int_digits_max} digits", code="malformed_json")
    return int(digits)


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_float=Decimal, parse_int=_bounded_int,
                          parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON: {exc}", code="malformed_json") from None
    except RecursionError:
        raise InvalidRequest("malformed JSON: nested too deeply", code="malformed_json") from None


async def read_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is {} when the body is optional."""
    raw = await request.body()  # its size is bounded by api.middleware.BodyLimit
    if not raw.strip() and optional:
        return {}
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    request.state.json_body = body  # for the audit record, should the call be refused
    return body


def required(body: dict[str, Any], name: str) -> Any:
    value = body.get(name)
    if value is None:
        raise InvalidRequest(f"{name} is required")
    return value


def text(body: dict[str, Any], name: str, *, default: str | None = None,
         length_max: int = 128) -> str:
    value = body.get(name, default)
    if value is None:
        raise InvalidRequest(f"{name} is required")
    if not isinstance(value, str) or not value or len(value) > length_max:
        raise InvalidRequest(f"{name} must be a non-empty string of at most {length_max} characters")
    return value


def whole_number(body: dict[str, Any], name: str, minimum: int, maximum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidRequest(f"{name} must be a whole number from {minimum} to {maximum}")
    return value
