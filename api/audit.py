"""GET /wallet/reserves/audit (admin): the audit log, newest first, filtered and paged.

Read from the database (the persister writes it), so it lags the journal by the persister's lag.
Paging: `next_cursor` of a page is the `before` of the next one (event ids only go down).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import Role
from api.context import ApiContext
from api.endpoint import endpoint
from api.jsonio import json_response
from api.openapi import _obj, _success, ok, operation
from api.params import query_int, query_text
from engine import limits as engine_limits
from persistence import limits as page
from persistence.audit import OUTCOMES, audit_entries
from persistence.store import AuditQuery

_MS_MAX = 253_402_300_799_999  # the last ms of year 9999: a datetime still holds it
_ID_MAX = 2**53 - 1


def audit_query(request: Request) -> AuditQuery:
    return AuditQuery(
        limit=query_int(request, "limit", page.audit_page_default, 1, page.audit_page_max),
        actor=query_text(request, "actor"),
        action=query_text(request, "action", 64),
        outcome=query_text(request, "outcome", choices=OUTCOMES),
        reference=query_text(request, "reference", engine_limits.reference_length_max),
        since_ms=_optional_int(request, "since_ms", 0, _MS_MAX),
        until_ms=_optional_int(request, "until_ms", 0, _MS_MAX),
        before_event_id=_optional_int(request, "before", 1, _ID_MAX),
    )


def _optional_int(request: Request, name: str, minimum: int, maximum: int) -> int | None:
    if name not in request.query_params:
        return None
    return query_int(request, name, minimum, minimum, maximum)


@endpoint(Role.admin)
async def audit_log(request: Request, ctx: ApiContext) -> Response:
    query = audit_query(request)
    # SQLAlchemy is synchronous: keep the event loop free while the database answers.
    entries = await asyncio.to_thread(audit_entries, ctx.settings.database_url, query)
    cursor = entries[-1]["event_id"] if len(entries) == query.limit else None
    return json_response({"success": True, "entries": entries, "next_cursor": cursor})


routes = [Route("/wallet/reserves/audit", audit_log, methods=["GET"])]

_TEXT = {"type": "string"}
_NULLABLE_TEXT = {"type": ["string", "null"]}
ENTRY = _obj(
    ["event_id", "created_ms", "actor", "role", "ip", "action", "route", "method", "path",
     "account", "reference", "outcome", "status", "code", "error", "body", "result"],
    event_id={"type": "integer"}, created_ms={"type": "integer"}, actor=_TEXT,
    role=_NULLABLE_TEXT, ip=_TEXT, action=_TEXT, route=_NULLABLE_TEXT, method=_NULLABLE_TEXT,
    path=_NULLABLE_TEXT, account=_TEXT, reference=_TEXT, outcome={"enum": list(OUTCOMES)},
    status={"type": ["integer", "null"], "description": "the HTTP status; null: not over HTTP"},
    code=_NULLABLE_TEXT, error=_NULLABLE_TEXT, body={"type": ["object", "null"]},
    result={"type": "object"})


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_MS = {"type": "integer", "minimum": 0, "maximum": _MS_MAX}
openapi_paths: dict[str, Any] = {
    "/wallet/reserves/audit": {"get": operation(
        "The audit log: every change and every refused change, newest first", "admin",
        ok(_success(entries={"type": "array", "items": ENTRY},
                    next_cursor={"type": ["integer", "null"],
                                 "description": "`before` of the next page; null: the last"})),
        params=[
            _query("actor", {"type": "string", "minLength": 1, "maxLength": 128},
                   "the token's identity"),
            _query("action", {"type": "string", "minLength": 1, "maxLength": 64},
                   "e.g. reserve_topup, reserve, deposit: the action and its refusals"),
            _query("outcome", {"enum": list(OUTCOMES)}, "applied or refused"),
            _query("reference", {"type": "string", "minLength": 1,
                                 "maxLength": engine_limits.reference_length_max},
                   "the reference the change named"),
            _query("since_ms", _MS, "created at or after (ms since the epoch)"),
            _query("until_ms", _MS, "created before (ms since the epoch)"),
            _query("before", {"type": "integer", "minimum": 1, "maximum": _ID_MAX},
                   "the cursor: entries with a smaller event id"),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": page.audit_page_max,
                             "default": page.audit_page_default}, "entries per page"),
        ], errors=(400,))},
}
