"""Holds by reference: read, release, commit (role service)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import api.convertors  # noqa: F401  (registers {...:reference})
from api.auth import Role
from api.context import ApiContext
from api.endpoint import audit_body, endpoint
from api.jsonio import json_response, read_object
from engine.service import hold_result_dict


@endpoint(Role.service)
async def get_hold(request: Request, ctx: ApiContext) -> Response:
    hold = await ctx.engine.get_hold(request.path_params["reference_id"])
    return json_response({"success": True, "hold": hold.to_dict()})


@endpoint(Role.service)
async def release_hold(request: Request, ctx: ApiContext) -> Response:
    result = await ctx.engine.release_reserve(request.path_params["reference_id"],
                                              request.state.audit)
    return json_response(hold_result_dict(result))


@endpoint(Role.service)
async def commit_hold(request: Request, ctx: ApiContext) -> Response:
    body = await read_object(request, optional=True)
    amount = body.get("amount")
    meta = audit_body(request, {} if amount is None else {"amount": str(amount)})
    result = await ctx.engine.commit_reserve(request.path_params["reference_id"], amount, meta)
    return json_response(hold_result_dict(result))


# A reference may contain "/": GET reads the whole rest of the path; POST .../release and
# .../commit take the reference before their last segment.
_HOLD = "/wallet/reserves/holds/{reference_id:reference}"

routes = [
    Route(_HOLD, get_hold, methods=["GET"]),
    Route(f"{_HOLD}/release", release_hold, methods=["POST"]),
    Route(f"{_HOLD}/commit", commit_hold, methods=["POST"]),
]
