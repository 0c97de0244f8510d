"""Exact money at the edges: Decimal in, integer minor units inside, Decimal out.

No float ever takes part in arithmetic. An amount that cannot be represented exactly in the
currency's minor units is refused, never rounded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal, Inexact, InvalidOperation, localcontext
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any

from engine import limits
from engine.errors import InvalidRequest, PrecisionError


# A decimal string is read as a JSON text holding one number (RFC 8259): the number's grammar in
# ASCII digits, with JSON's whitespace (space, tab, CR, LF) around it allowed. No "+", "_",
# leading zero, ".5" or "5.", nor the other digits Decimal() takes ("١", "１０"); an exponent is
# allowed, as in JSON ("1e3", "2.5E-2").
DECIMAL_PATTERN = r"^[ \t\n\r]*-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?[ \t\n\r]*$"
_DECIMAL = re.compile(DECIMAL_PATTERN[1:-1], re.ASCII)
_JSON_WHITESPACE = " \t\n\r"
_NOT_FINITE = ("nan", "snan", "inf", "infinity")


def parse_decimal(value: Any, field: str = "amount") -> Decimal:
    """Turn a JSON-ish value into a Decimal without passing through binary float.

    Accepts Decimal, int and str (in the grammar of a JSON number). A float is refused: by the
    time it is a float, digits may already be lost (the API parses JSON numbers straight to
    Decimal).
    """
    if isinstance(value, bool):
        raise InvalidRequest(f"{field} must be a number")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        if value.strip(_JSON_WHITESPACE).lstrip("+-").lower() in _NOT_FINITE:
            raise InvalidRequest(f"{field} must be a finite number")
        if not _DECIMAL.fullmatch(value):
            raise InvalidRequest(f"{field} must be a number, got {value!r} (a decimal string is "
                                 "written as a JSON number, in ASCII digits: \"12.5\", \"1e3\")")
        try:
            result = Decimal(value.strip(_JSON_WHITESPACE))
        except InvalidOperation:  # an exponent beyond what Decimal holds
            raise InvalidRequest(f"{field} must be a number, got {value!r}") from None
    elif isinstance(value, float):
        raise InvalidRequest(f"{field} must be given as a decimal string or exact number, not a float")
    elif value is None:
        raise InvalidRequest(f"{field} is required")
    else:
        raise InvalidRequest(f"{field} must be a number")
    if not result.is_finite():
        raise InvalidRequest(f"{field} must be a finite number")
    return result


def to_minor(amount: Any, decimals: int, currency: str, field: str = "amount") -> int:
    """Decimal major units -> positive integer minor units, exactly, or InvalidRequest."""
    value = parse_decimal(amount, field)
    if value <= 0:
        raise InvalidRequest(f"{field} must be greater than zero")
    if value.adjusted() > 20:  # far beyond any balance; keeps the exact arithmetic below small
        raise InvalidRequest(f"{field} {value} exceeds the largest supported amount")
    if value.adjusted() < -decimals:  # below one minor unit (also keeps scaleb from underflowing)
        raise PrecisionError(
            f"{field} {value} has more than {decimals} decimal places, the precision of {currency}"
        )
    with localcontext() as ctx:
        ctx.prec = 64  # more digits than any accepted amount has, so nothing rounds silently
        ctx.traps[Inexact] = True
        scaled = value.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise PrecisionError(
            f"{field} {value} has more than {decimals} decimal places, the precision of {currency}"
        )
    minor = int(scaled)
    if minor > limits.amount_minor_max:
        raise InvalidRequest(f"{field} {value} exceeds the largest supported amount")
    return minor


def from_minor(amount_minor: int, decimals: int) -> Decimal:
    """Integer minor units -> Decimal major units, exact."""
    return Decimal(amount_minor).scaleb(-decimals)


def utilization_percent(locked_minor: int, total_minor: int) -> Decimal:
    """locked / total * 100, to two decimal places (0 when total is 0)."""
    if total_minor <= 0:
        return Decimal("0.0")
    return (Decimal(locked_minor) * 100 / Decimal(total_minor)).quantize(Decimal("0.01"))


def reserve_status(locked_minor: int, total_minor: int) -> str:
    """healthy < 50 % <= moderate < 75 % <= warning < 90 % <= critical, in exact integers."""
    if total_minor <= 0:
        return "healthy"
    scaled = locked_minor * 100
    if scaled >= 90 * total_minor:
        return "critical"
    if scaled >= 75 * total_minor:
        return "warning"
    if scaled >= 50 * total_minor:
        return "moderate"
    return "healthy"


def json_number(value: Decimal) -> str:
    """Render a Decimal as a JSON number the way the seed shows them: 10000.0, 0.000001, 12.5."""
    if value == value.to_integral_value():
        return f"{value.quantize(Decimal(1)):f}.0"
    return f"{value.normalize():f}"


def exact_json(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """JSON text with every Decimal (nested too) as an exact number (json_number); `default` as
    for json.dumps, for values JSON has no type for. The common exact types are written here
    (json.encoder's own string escaping); anything else goes through json.dumps."""
    kind = type(value)
    if kind is str:
        return _json_string(value)
    if kind is Decimal:
        return json_number(value)
    if kind is int:
        return str(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json_string(str(k))}:{exact_json(v, default)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(exact_json(v, default) for v in value) + "]"
    if isinstance(value, Decimal):
        return json_number(value)
    return json.dumps(value, default=default)
