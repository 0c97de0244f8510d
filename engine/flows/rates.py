"""Prices: a PriceSource interface, the built-in static table, and exact conversion.

Conversion is exact Decimal arithmetic, rounded DOWN to the target currency's minor unit: the
user never receives a fraction more than the rate gives, so no money is created.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, Inexact, localcontext
from importlib import resources
from pathlib import Path
from typing import Protocol

from engine.errors import InvalidRequest, NotFound
from engine.flows import limits
from engine.registry import Currency


class PairNotQuoted(NotFound):
    pass


@dataclass(frozen=True, slots=True)
class PairRate:
    rate: Decimal  # units of the target per unit of the source
    spread: Decimal  # fraction kept by the house, 0 <= spread < 1

    def __post_init__(self) -> None:
        assert self.rate > 0, self.rate
        assert 0 <= self.spread < 1, self.spread

    @property
    def effective(self) -> Decimal:
        with localcontext() as ctx:
            ctx.prec = limits.rate_precision_digits
            ctx.traps[Inexact] = True
            return self.rate * (1 - self.spread)


class PriceSource(Protocol):
    def rate(self, from_currency: str, to_currency: str) -> PairRate: ...


def _decimal(value: object, where: str) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str | int) and not isinstance(value, bool):
        return Decimal(value)
    raise ValueError(f"{where} must be a decimal string or number, got {value!r}")


class StaticPriceSource:
    """Rates and spreads from a TOML table (engine/flows/rates.toml or RESERVES_RATES)."""

    def __init__(self, pairs: dict[tuple[str, str], PairRate]) -> None:
        self.pairs = dict(pairs)

    @classmethod
    def load(cls, path: str | Path | None = None) -> StaticPriceSource:
        path = path or os.environ.get("RESERVES_RATES") or None
        if path:
            text = Path(path).read_text(encoding="utf-8")
        else:
            text = resources.files("engine.flows").joinpath("rates.toml").read_text(
                encoding="utf-8")
        data = tomllib.loads(text, parse_float=Decimal)  # TOML floats read exactly
        pairs: dict[tuple[str, str], PairRate] = {}
        for name, entry in data.get("pairs", {}).items():
            source, _, target = name.upper().partition("/")
            if not source or not target:
                raise ValueError(f"rates: pair {name!r} must be written FROM/TO")
            rate = _decimal(entry["rate"], f"rates: {name}.rate")
            spread = _decimal(entry.get("spread", "0"), f"rates: {name}.spread")
            if not rate > 0 or not 0 <= spread < 1:
                raise ValueError(f"rates: {name} needs rate > 0 and 0 <= spread < 1")
            pairs[(source, target)] = PairRate(rate, spread)
        return cls(pairs)

    def rate(self, from_currency: str, to_currency: str) -> PairRate:
        found = self.pairs.get((from_currency.upper(), to_currency.upper()))
        if found is None:
            raise PairNotQuoted(f"No rate for {from_currency} -> {to_currency}",
                                code="pair_not_quoted")
        return found


def convert_minor(amount_minor: int, source: Currency, target: Currency, pair: PairRate) -> int:
    """amount (source minor units) -> target minor units, exact, rounded down."""
    assert amount_minor > 0, amount_minor
    with localcontext() as ctx:
        ctx.prec = limits.rate_precision_digits
        ctx.traps[Inexact] = True  # every step below is exact at this precision
        value = Decimal(amount_minor).scaleb(target.decimals - source.decimals) * pair.effective
        result = int(value.to_integral_value(rounding=ROUND_DOWN))
    if result <= 0:
        raise InvalidRequest(
            f"amount is too small: it converts to less than one minor unit of {target.code}",
            code="amount_too_small",
        )
    return result
