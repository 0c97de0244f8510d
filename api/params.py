"""Query parameters: the one parser of the whole numbers routes take (?limit=, ?period_days=)."""

from __future__ import annotations

from starlette.requests import Request

from engine.errors import InvalidRequest


def _one(request: Request, name: str) -> str | None:
    """The parameter's value; given twice it is refused (Starlette keeps the last, a client or
    a proxy may read the first: `?limit=&limit=6` must not mean two things)."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise InvalidRequest(f"{name} must be given once", code="invalid_query_parameter")
    return values[0] if values else None


def query_int(request: Request, name: str, default: int, minimum: int, maximum: int) -> int:
    """ASCII digits only, within [minimum, maximum]: str.isdigit() alone also takes "²" or
    "٣", which int() then refuses (a 500)."""
    raw = _one(request, name)
    if raw is None:
        return default
    if (not raw.isascii() or not raw.isdigit() or len(raw) > len(str(maximum))
            or not minimum <= int(raw) <= maximum):
        raise InvalidRequest(f"{name} must be a whole number from {minimum} to {maximum}",
                             code="invalid_query_parameter")
    return int(raw)


def query_text(request: Request, name: str, length_max: int = 128,
               choices: tuple[str, ...] = ()) -> str | None:
    """An optional text filter: None when absent; bounded, and one of `choices` if given."""
    raw = _one(request, name)
    if raw is None:
        return None
    if (not raw or len(raw) > length_max or not raw.isprintable()
            or (choices and raw not in choices)):
        allowed = f"one of {', '.join(choices)}" if choices else (
            f"a printable text of 1 to {length_max} characters")
        raise InvalidRequest(f"{name} must be {allowed}", code="invalid_query_parameter")
    return raw
