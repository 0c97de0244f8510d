"""API tokens over HTTP (admin): the way to create a token when the token book lives inside the
serving process (the embedded default's fakeredis), and the same on a shared Redis.

    POST /wallet/reserves/tokens                 {"role": "admin"|"service", "name"?}: the
                                                 token, shown in this answer only
    GET  /wallet/reserves/tokens                 the stored tokens (names, roles, no secrets)
    POST /wallet/reserves/tokens/{name}/revoke   revoke the stored tokens of a name

Only the token's SHA-256 digest is kept (api.auth); each change is an `audit` journal event
with the token's name and role, never the token.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import Role, digest_of, new_token
from api.context import ApiContext
from api.endpoint import audited, endpoint
from api.jsonio import json_response, read_object
from api.openapi import _obj, _success, body, ok, operation, path_param
from engine.errors import InvalidRequest, NotFound

_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
NAME_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9_.:@-]{1,64}$"}


def _key(ctx: ApiContext) -> str:
    return f"{ctx.settings.key_prefix}:tokens"


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidRequest("name must be 1-64 characters of letters, digits and _ . : @ -",
                             code="invalid_token_name")
    return value


@endpoint(Role.admin, action="token_create")
async def create(request: Request, ctx: ApiContext) -> Response:
    data = await read_object(request)
    raw_role = data.get("role")
    if raw_role not in (Role.admin.value, Role.service.value):
        raise InvalidRequest("role must be admin or service", code="invalid_role")
    role = Role(raw_role)
    now_ms = ctx.engine.ops.clock_ms()
    name = _name(data["name"]) if data.get("name") is not None else f"{role}-{now_ms}"

    async def change(meta: dict[str, Any]) -> str:
        token = new_token()
        record = json.dumps({"name": name, "role": role.value, "created_ms": now_ms})
        await ctx.engine.client.hset(_key(ctx), digest_of(token), record)
        await ctx.engine.run(ctx.engine.ops.audit(
            meta["actor"], "token_create", meta["ip"],
            {"request": meta["request"], "result": {"name": name, "role": role.value}}))
        return token

    token = await audited(request, ctx, "token_create", {"role": role.value, "name": name},
                          change)
    return json_response({"success": True, "token": token, "name": name, "role": role.value,
                          "created_ms": now_ms})


@endpoint(Role.admin)
async def listing(request: Request, ctx: ApiContext) -> Response:
    rows = await ctx.engine.client.hgetall(_key(ctx))
    tokens = sorted(({"digest": d[:12], **json.loads(v)} for d, v in rows.items()),
                    key=lambda r: (r["created_ms"], r["name"]))
    return json_response({"success": True, "tokens": tokens})


@endpoint(Role.admin, action="token_revoke")
async def revoke(request: Request, ctx: ApiContext) -> Response:
    name = _name(request.path_params["name"])

    async def change(meta: dict[str, Any]) -> int:
        rows = await ctx.engine.client.hgetall(_key(ctx))
        doomed = [d for d, v in rows.items() if json.loads(v)["name"] == name]
        if not doomed:
            raise NotFound(f"No stored token is named {name}", code="token_not_found")
        removed = int(await ctx.engine.client.hdel(_key(ctx), *doomed))
        await ctx.engine.run(ctx.engine.ops.audit(
            meta["actor"], "token_revoke", meta["ip"],
            {"request": meta["request"], "result": {"name": name, "revoked": removed}}))
        return removed

    removed = await audited(request, ctx, "token_revoke", {"name": name}, change)
    return json_response({"success": True, "name": name, "revoked": removed})


routes = [
    Route("/wallet/reserves/tokens", create, methods=["POST"]),
    Route("/wallet/reserves/tokens", listing, methods=["GET"]),
    Route("/wallet/reserves/tokens/{name}/revoke", revoke, methods=["POST"]),
]

_ROLE = {"enum": ["admin", "service"]}
openapi_paths: dict[str, Any] = {
    "/wallet/reserves/tokens": {
        "post": operation(
            "Create an API token; it is in this answer only (only its SHA-256 is kept)",
            "admin",
            ok(_success(token={"type": "string"}, name={"type": "string"}, role=_ROLE,
                        created_ms={"type": "integer"})),
            request=body(_obj(["role"], role=_ROLE, name=NAME_SCHEMA)), errors=(400, 413)),
        "get": operation(
            "The stored API tokens: names, roles, creation times, digest prefixes", "admin",
            ok(_success(tokens={"type": "array", "items": _obj(
                ["name", "role", "created_ms", "digest"], name={"type": "string"}, role=_ROLE,
                created_ms={"type": "integer"}, digest={"type": "string"})})))},
    "/wallet/reserves/tokens/{name}/revoke": {"post": operation(
        "Revoke the stored tokens of a name (each process may accept them 5 s more)", "admin",
        ok(_success(name={"type": "string"}, revoked={"type": "integer"})),
        params=[path_param("name", NAME_SCHEMA)], errors=(400, 404))},
}
