"""The audit log as `GET /wallet/reserves/audit` and `reserves audit` show it: a page of
entries, newest first, each with who (actor, role, IP), what (action, route, reference) and the
outcome (applied, or refused with its status and error code)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from persistence.store import REFUSED_SUFFIX, AuditQuery, Store, dt_to_ms, shared_engine

OUTCOMES = ("applied", "refused")


def audit_entries(database_url: str, query: AuditQuery) -> list[dict[str, Any]]:
    store = Store(database_url, shared_engine(database_url))  # shared: not closed here
    return [audit_view(row) for row in store.audit_page(query)]


def audit_view(row: sa.Row[Any]) -> dict[str, Any]:
    request: dict[str, Any] = row.request if isinstance(row.request, dict) else {}
    result: dict[str, Any] = row.result if isinstance(row.result, dict) else {}
    refused = row.action.endswith(REFUSED_SUFFIX)
    over_http = "method" in request
    return {
        "event_id": int(row.event_id), "created_ms": dt_to_ms(row.created_at),
        "actor": row.actor, "role": request.get("role"), "ip": row.ip, "action": row.action,
        "route": request.get("route"), "method": request.get("method"),
        "path": request.get("path"), "account": row.account, "reference": row.reference,
        "outcome": "refused" if refused else "applied",
        "status": result.get("status") if refused else (200 if over_http else None),
        "code": result.get("code") if refused else None,
        "error": result.get("error") if refused else None,
        "body": request.get("body"), "result": result,
    }
