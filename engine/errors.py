"""The exception tree and the scripts' result codes.

ReserveError
├── InvalidRequest          400: bad amount, reference, currency format, missing field
│   └── PrecisionError      400: more decimals than the currency has
├── NotFound                404
│   ├── UnknownCurrency     unknown currency or account type
│   ├── AccountNotFound     account not opened
│   └── HoldNotFound
├── Conflict                409
│   ├── InsufficientReserve amount exceeds the available balance (carries reserve_status)
│   ├── ReferenceConflict   same reference, different amount or account
│   ├── HoldAlreadyEnded    committed / released / expired already
│   ├── ExceedsHold         commit of more than was held
│   ├── CurrencyMismatch    an amount converted for another currency than the hold's account
│   └── LimitExceeded       a balance would pass 2^53 - 1 minor units
└── Unavailable             503: Redis unreachable
    └── LedgerNotLoaded     Redis lost its data (no event counter): `reserves rebuild` first
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ResultCode(IntEnum):
    """Mirror of the codes the Lua scripts return (see each script's header)."""

    ok = 0
    ok_existing = 1  # idempotent repeat: nothing changed, the earlier result is returned
    invalid_amount = 10
    account_not_found = 11
    hold_not_found = 12
    reference_conflict = 20
    exceeds_available = 21
    exceeds_hold = 22
    exceeds_limit = 23
    hold_already_released = 30
    hold_already_committed = 31
    hold_expired = 32
    ledger_not_loaded = 40  # the shard's event counter is missing: Redis lost its data
    currency_mismatch = 41  # the account is not in the currency the amount was converted with


# Reply code -> ResultCode by dict: calling the enum costs more than the rest of a reply's
# parsing on the hot path.
RESULT_CODES: dict[int, ResultCode] = {code.value: code for code in ResultCode}


class ReserveError(Exception):
    status_code = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"success": False, "error": self.message}
        body.update(self.details)
        return body


class InvalidRequest(ReserveError):
    status_code = 400


class PrecisionError(InvalidRequest):
    pass


class NotFound(ReserveError):
    status_code = 404


class UnknownCurrency(NotFound):
    pass


class AccountNotFound(NotFound):
    pass


class HoldNotFound(NotFound):
    pass


class Conflict(ReserveError):
    status_code = 409


class InsufficientReserve(Conflict):
    pass


class ReferenceConflict(Conflict):
    pass


class HoldAlreadyEnded(Conflict):
    pass


class ExceedsHold(Conflict):
    pass


class LimitExceeded(Conflict):
    pass


class CurrencyMismatch(Conflict):
    pass


class Unavailable(ReserveError):
    status_code = 503


class LedgerNotLoaded(Unavailable):
    pass


_CODE_ERRORS: dict[ResultCode, tuple[type[ReserveError], str]] = {
    ResultCode.invalid_amount: (InvalidRequest, "Amount must be a positive integer of minor units"),
    ResultCode.account_not_found: (AccountNotFound, "Account {account} does not exist"),
    ResultCode.hold_not_found: (HoldNotFound, "Hold {reference_id} not found"),
    ResultCode.reference_conflict: (
        ReferenceConflict,
        "Reference {reference_id} is already used with a different amount or account",
    ),
    ResultCode.exceeds_hold: (ExceedsHold, "Cannot commit more than the held amount of hold {reference_id}"),
    ResultCode.exceeds_limit: (LimitExceeded, "Balance of {account} would exceed the supported maximum"),
    ResultCode.hold_already_released: (HoldAlreadyEnded, "Hold {reference_id} was already released"),
    ResultCode.hold_already_committed: (HoldAlreadyEnded, "Hold {reference_id} was already committed"),
    ResultCode.hold_expired: (HoldAlreadyEnded, "Hold {reference_id} has expired"),
    ResultCode.ledger_not_loaded: (
        LedgerNotLoaded,
        "Redis does not hold the ledger (its data was lost); writes are refused until an "
        "operator runs `reserves rebuild`",
    ),
    ResultCode.currency_mismatch: (
        CurrencyMismatch, "Hold {reference_id} is not in the currency the amount was given in",
    ),
}


def raise_for_code(code: ResultCode, **context: Any) -> None:
    """The one place a script's result code becomes an exception.

    exceeds_available is raised by the caller, which has the balances to build reserve_status.
    """
    if code in (ResultCode.ok, ResultCode.ok_existing):
        return
    error_type, template = _CODE_ERRORS[code]
    message = template.format_map(_Default(context))
    extra = {"code": code.name}
    if isinstance(error_type, type) and issubclass(error_type, HoldAlreadyEnded):
        extra["state"] = code.name.removeprefix("hold_").removeprefix("already_")
    raise error_type(message, **extra)


class _Default(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"
