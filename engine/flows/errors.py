"""Errors of the flows, in the engine's exception tree (engine.errors)."""

from __future__ import annotations

from typing import Any

from engine.errors import Conflict, NotFound, ReserveError


class InsufficientFunds(Conflict):
    """The user's wallet holds less than the operation needs (409)."""


class QuoteExpired(Conflict):
    """The quote is unknown or past its expiry (409)."""


class FlowNotFound(NotFound):
    pass


class BadSignature(ReserveError):
    """A callback whose signature does not verify (401): nothing is changed."""

    status_code = 401


class ProviderError(ReserveError):
    """The mobile-money provider refused or failed to start a transaction (502)."""

    status_code = 502


class RecordedFailure(ReserveError):
    """A repeat of a request whose flow failed: the first answer again (same status, body)."""

    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("error", "failed")))
        self.status_code = status_code
        self.body = body

    def to_dict(self) -> dict[str, Any]:
        return dict(self.body)
