"""Database errors as domain errors, classified once: transient (retry) or not.

ReserveError (engine.errors)
├── Unavailable
│   └── StoreUnavailable   the database cannot be reached now: retry with backoff
└── StoreError             anything else the database refused (schema missing, bad data)
    └── LedgerDiverged     an event id the ledger already holds with other content
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

from engine.errors import ReserveError, Unavailable


class StoreUnavailable(Unavailable):
    pass


class StoreError(ReserveError):
    status_code = 500


class LedgerDiverged(StoreError):
    """The journal carries an event whose id the ledger holds with other content: Redis lost
    data and handed out the id again (or the ledger was written by another deployment). Never
    a duplicate to skip: the persister stops and keeps the entry."""


def is_transient(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(
        error, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError
        | sa_exc.TimeoutError | ConnectionError
    )


def translate(error: Exception) -> StoreError | StoreUnavailable:
    detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0][:300]
    if is_transient(error):
        return StoreUnavailable(f"Database is unavailable: {detail}", code="database_unavailable")
    return StoreError(f"Database error: {detail}", code="database_error")
