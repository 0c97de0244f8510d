"""Quotes: a price for an amount, with an id and an expiry, kept in Redis until then."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine.engine import ReserveEngine
from engine.errors import InvalidRequest
from engine.flows import limits
from engine.flows.errors import QuoteExpired
from engine.flows.rates import PairRate, PriceSource, convert_minor
from engine.flows.store import FlowStore, call
from engine.money import from_minor, to_minor
from engine.registry import Currency


@dataclass(frozen=True, slots=True)
class Quote:
    quote_id: str
    source: Currency
    target: Currency
    from_minor: int
    to_minor: int
    rate: Decimal
    spread: Decimal
    expires_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "quote_id": self.quote_id,
            "from_currency": self.source.code,
            "to_currency": self.target.code,
            "from_amount": from_minor(self.from_minor, self.source.decimals),
            "to_amount": from_minor(self.to_minor, self.target.decimals),
            "rate": self.rate,
            "spread": self.spread,
            "expires_at_ms": self.expires_ms,
        }


class Quotes:
    def __init__(self, engine: ReserveEngine, store: FlowStore, prices: PriceSource) -> None:
        self.engine = engine
        self.store = store
        self.prices = prices

    def pair(self, from_currency: Any, to_currency: Any) -> tuple[Currency, Currency]:
        if not isinstance(from_currency, str) or not isinstance(to_currency, str):
            raise InvalidRequest("from and to currencies are required")
        source = self.engine.registry.get(from_currency)
        target = self.engine.registry.get(to_currency)
        if source.code == target.code:
            raise InvalidRequest("from and to currencies must differ", code="same_currency")
        return source, target

    def price(self, source: Currency, target: Currency, from_minor_: int) -> tuple[int, PairRate]:
        pair = self.prices.rate(source.code, target.code)
        return convert_minor(from_minor_, source, target, pair), pair

    async def create(self, from_currency: Any, to_currency: Any, amount: Any) -> Quote:
        source, target = self.pair(from_currency, to_currency)
        amount_minor = to_minor(amount, source.decimals, source.code)
        to_amount_minor, pair = self.price(source, target, amount_minor)
        quote = Quote(uuid.uuid4().hex, source, target, amount_minor, to_amount_minor, pair.rate,
                      pair.spread, self.engine.ops.clock_ms() + limits.quote_ttl_s * 1000)
        key = self._key(quote.quote_id)
        await self.engine.run(call("hset", key, None, None, {
            "from": source.code, "to": target.code, "from_minor": amount_minor,
            "to_minor": to_amount_minor, "rate": str(pair.rate), "spread": str(pair.spread),
            "expires_ms": quote.expires_ms}))
        # Redis drops it a while after expiry; the engine clock decides whether it is valid
        await self.engine.run(call("expire", key, 2 * limits.quote_ttl_s))
        return quote

    async def get(self, quote_id: Any) -> Quote:
        if not isinstance(quote_id, str) or not 1 <= len(quote_id) <= 64:
            raise InvalidRequest("quote_id must be a string of 1-64 characters")
        raw = await self.engine.run(call("hgetall", self._key(quote_id)))
        if not raw or int(raw["expires_ms"]) <= self.engine.ops.clock_ms():
            raise QuoteExpired(f"Quote {quote_id} is unknown or expired", code="quote_expired")
        return Quote(quote_id, self.engine.registry.get(raw["from"]),
                     self.engine.registry.get(raw["to"]), int(raw["from_minor"]),
                     int(raw["to_minor"]), Decimal(raw["rate"]), Decimal(raw["spread"]),
                     int(raw["expires_ms"]))

    def _key(self, quote_id: str) -> str:
        return f"{self.store.prefix}:flow:quote:{quote_id}"
