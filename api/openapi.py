"""The OpenAPI 3.1 description served at /openapi.json. Each route module may add its own
paths (a module-level `openapi_paths` dict); the shared schemas live here."""

from __future__ import annotations

from typing import Any

from engine import limits as engine_limits
from engine import money, references
from persistence import limits as persistence_limits

REF = "#/components/schemas/"


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


AMOUNT = {"oneOf": [{"type": "number"}, {"type": "string", "pattern": money.DECIMAL_PATTERN}],
          "description": "major units, exact: a JSON number or a decimal string; never more "
                         "decimals than the currency has"}
REFERENCE = {"type": "string", "minLength": 1, "maxLength": engine_limits.reference_length_max,
             "pattern": references.PATTERN, "description": references.RULE}
OPERATION = {"type": "string", "minLength": 1,
             "maxLength": engine_limits.operation_type_length_max}
NUMBER = {"type": "number"}
TRANSACTION_ID = {"type": ["integer", "null"], "description": "null: a repeat, nothing journalled"}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["success", "error"],
              "properties": {"success": {"const": False}, "error": {"type": "string"},
                             "code": {"type": "string"},
                             "reserve_status": ref("Sufficiency")}},
    "Reserve": {"type": "object",
                "required": ["currency", "account_type", "total_balance", "available_balance",
                             "locked_balance", "utilization_percentage", "status", "account_id",
                             "account_number"],
                "properties": {"currency": {"type": "string"},
                               "account_type": {"enum": ["crypto", "fiat"]},
                               "total_balance": NUMBER, "available_balance": NUMBER,
                               "locked_balance": NUMBER, "utilization_percentage": NUMBER,
                               "status": {"enum": ["healthy", "moderate", "warning", "critical"]},
                               "account_id": {"type": "integer"},
                               "account_number": {"type": "string"},
                               "forecast": {"type": "object"}}},
    "Sufficiency": {"type": "object",
                    "required": ["is_sufficient", "required_amount", "available_amount",
                                 "utilization_percentage", "status"],
                    "properties": {"is_sufficient": {"type": "boolean"},
                                   "required_amount": NUMBER, "available_amount": NUMBER,
                                   "utilization_percentage": NUMBER, "status": {"type": "string"}}},
    "HoldResult": {"type": "object",
                   "required": ["success", "reference_id", "reserved_amount", "available_balance",
                                "locked_balance", "status"],
                   "properties": {"success": {"const": True}, "reference_id": {"type": "string"},
                                  "reserved_amount": NUMBER, "available_balance": NUMBER,
                                  "locked_balance": NUMBER, "status": {"type": "string"},
                                  "hold_state": {"enum": ["pending", "committed", "released",
                                                          "expired"]},
                                  "committed_amount": NUMBER, "released_amount": NUMBER,
                                  "transaction_id": {"type": ["integer", "null"]}}},
    "Hold": {"type": "object", "required": ["reference_id", "account", "state", "amount"],
             "properties": {"reference_id": {"type": "string"}, "account": {"type": "string"},
                            "currency": {"type": "string"}, "account_type": {"type": "string"},
                            "state": {"type": "string"}, "amount": NUMBER,
                            "committed_amount": NUMBER, "released_amount": NUMBER,
                            "operation_type": {"type": "string"},
                            "created_at_ms": {"type": "integer"},
                            "expires_at_ms": {"type": ["integer", "null"]},
                            "ended_at_ms": {"type": ["integer", "null"]}}},
}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "bad input", 401: "no or bad token", 403: "wrong role", 404: "not found",
            409: "insufficient or conflicting", 413: "body too large",
            429: "rate limited", 502: "upstream provider failed", 503: "Redis unavailable"}
    return {str(c): {"description": text[c],
                     "content": {"application/json": {"schema": ref("Error")}}}
            for c in codes}


def ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"200": {"description": description,
                    "content": {"application/json": {"schema": schema}}}}


def body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def operation(summary: str, role: str | None, responses: dict[str, Any], *,
              request: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None,
              errors: tuple[int, ...] = ()) -> dict[str, Any]:
    """One operation; a role adds 401/403/429 and the bearer requirement."""
    op: dict[str, Any] = {"summary": summary, "responses": dict(responses)}
    if role is not None:
        op["security"] = [{"bearer": []}]
        op["description"] = f"Role: {role}."
        errors = (*errors, 401, 403, 429, 503)
    op["responses"].update(_errors(*sorted(set(errors))))
    if request is not None:
        op["requestBody"] = request
    if params:
        op["parameters"] = params
    return op


def path_param(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


ACCOUNT_PARAMS = [path_param("currency"), path_param("account_type", {"enum": ["crypto", "fiat"]})]
HOLD_PARAMS = [path_param("reference_id", REFERENCE)]
WRITE = (400, 404, 409, 413)


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _success(**props: Any) -> dict[str, Any]:
    return _obj(["success", *props], success={"const": True}, **props)


ANALYTICS_BY_CURRENCY = {
    "type": "object",
    "description": "Per currency: transaction_count and operations (counts of the reserve's "
                   "money operations, locks and releases included), and total_volume, the money "
                   "that moved in its major units: top-ups + withdrawals + commits (and flow "
                   "settlements). Locks, releases and expiries only earmark money or hand an "
                   "earmark back: a hold counts once, by what it committed."}

CORE_PATHS: dict[str, Any] = {
    "/health": {"get": operation("Liveness and Redis reachability", None,
                                 ok(_obj(["status"], status={"type": "string"})),
                                 errors=(503,))},
    "/metrics": {"get": operation("Prometheus metrics", None, {
        "200": {"description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}})},
    "/wallet/reserves/status": {"get": operation(
        "Every reserve, by account type, with a summary", "admin",
        ok(_success(reserves={"type": "object",
                               "required": ["crypto", "fiat", "summary"],
                               "properties": {
                                   "crypto": {"type": "object", "additionalProperties": ref("Reserve")},
                                   "fiat": {"type": "object", "additionalProperties": ref("Reserve")},
                                   "summary": _obj(["overall_status", "critical_reserves",
                                                    "warning_reserves"],
                                                   overall_status={"type": "string"},
                                                   critical_reserves={"type": "array"},
                                                   warning_reserves={"type": "array"})}})))},
    "/wallet/reserves/{currency}/{account_type}/balance": {"get": operation(
        "One reserve's balance", "admin", ok(_success(reserve=ref("Reserve"))),
        params=ACCOUNT_PARAMS, errors=(400, 404))},
    "/wallet/reserves/{currency}/{account_type}/topup": {"post": operation(
        "Add funds to a reserve (idempotent on source_reference)", "admin",
        ok(_success(topped_up_amount=NUMBER, new_total_balance=NUMBER,
                    transaction_id=TRANSACTION_ID)),
        request=body(_obj(["amount", "source_reference"], amount=AMOUNT,
                          source_reference=REFERENCE)),
        params=ACCOUNT_PARAMS, errors=WRITE)},
    "/wallet/reserves/{currency}/{account_type}/withdraw": {"post": operation(
        "Take funds out of a reserve's available balance (idempotent on destination_reference)",
        "admin",
        ok(_success(withdrawn_amount=NUMBER, new_total_balance=NUMBER,
                    transaction_id=TRANSACTION_ID)),
        request=body(_obj(["amount", "destination_reference"], amount=AMOUNT,
                          destination_reference=REFERENCE)),
        params=ACCOUNT_PARAMS, errors=WRITE)},
    "/wallet/reserves/analytics": {"get": operation(
        "Transactions by operation and currency over a period", "admin",
        ok(_success(analytics=_obj(["period_days", "total_transactions", "by_operation",
                                    "by_currency"],
                                   period_days={"type": "integer"},
                                   total_transactions={"type": "integer"},
                                   by_operation={"type": "object"},
                                   by_currency=ANALYTICS_BY_CURRENCY))),
        params=[{"name": "period_days", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": persistence_limits.period_days_min,
                            "maximum": persistence_limits.period_days_max}}],
        errors=(400,))},
    "/wallet/reserves/cache/clear": {"post": operation(
        "Clear the in-process caches (account lookups, status)", "admin",
        ok(_success(message={"type": "string"})))},
    "/wallet/reserves/{currency}/{account_type}/check": {"post": operation(
        "Is the available balance enough for an amount?", "service",
        ok({"allOf": [_success(), ref("Sufficiency")]}),
        request=body(_obj(["amount"], amount=AMOUNT, operation_type=OPERATION)),
        params=ACCOUNT_PARAMS, errors=WRITE)},
    "/wallet/reserves/{currency}/{account_type}/reserve": {"post": operation(
        "Lock an amount under a reference (idempotent on reference_id)", "service",
        ok(ref("HoldResult")),
        request=body(_obj(["amount", "reference_id", "operation_type"], amount=AMOUNT,
                          reference_id=REFERENCE, operation_type=OPERATION,
                          ttl_seconds={"type": "integer", "minimum": engine_limits.hold_ttl_s_min,
                                       "maximum": engine_limits.hold_ttl_s_max})),
        params=ACCOUNT_PARAMS, errors=WRITE)},
    "/wallet/reserves/holds/{reference_id}": {"get": operation(
        "A hold and its state", "service", ok(_success(hold=ref("Hold"))),
        params=HOLD_PARAMS, errors=(400, 404))},
    "/wallet/reserves/holds/{reference_id}/release": {"post": operation(
        "Void a hold (idempotent)", "service", ok(ref("HoldResult")),
        params=HOLD_PARAMS, errors=(400, 404, 409))},
    "/wallet/reserves/holds/{reference_id}/commit": {"post": operation(
        "Complete a hold: the amount leaves the reserve; a partial commit releases the rest",
        "service", ok(ref("HoldResult")),
        request=body(_obj([], amount=AMOUNT), required=False),
        params=HOLD_PARAMS, errors=(400, 404, 409, 413))},
}


def build(extra_paths: list[dict[str, Any]]) -> dict[str, Any]:
    paths = dict(CORE_PATHS)
    for more in extra_paths:
        paths.update(more)
    return {
        "openapi": "3.1.0",
        "info": {"title": "reserves", "version": "0.1.0",
                 "description": "Liquidity reserves of a crypto/fiat wallet: check, lock, commit "
                                "and release amounts; top up and withdraw; watch utilization."},
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
