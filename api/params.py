"""Query parameters: the one parser of the whole numbers routes take (?limit=, ?period_days=)."""

from __future__ import annotations

from starlette.requests import Request

from engine.errors import InvalidRequest


def query_int(request: Request, name: str, default: int, minimum: int, maximum: int) -> int:
    """ASCII digits only, within [minimum, maximum]: str.isdigit() alone also takes "²" or
    "٣", which int() then refuses (a 500)."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if (not raw.isascii() or not raw.isdigit() or len(raw) > len(str(maximum))
            or not minimum <= int(raw) <= maximum):
        raise InvalidRequest(f"{name} must be a whole number from {minimum} to {maximum}",
                             code="invalid_query_parameter")
    return int(raw)
