"""`reserves serve` and `reserves token`."""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import time
from typing import Any

from engine import LOG_FORMAT
from engine.cli import EMBEDDED_REFUSAL, RemoteError, add_remote_arguments, remote_json

log = logging.getLogger("reserves.api")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = subparsers.add_parser(
        "serve", help="start the HTTP API (and, on the embedded default, the persister)",
        description="Serve the admin and service API with uvicorn. With no RESERVES_REDIS_URL it "
        "runs on an in-process fakeredis and persists to RESERVES_DATABASE_URL (default "
        "sqlite:///reserves.db) from the same process. With no token configured it creates "
        "an admin token and prints it once.")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--workers", type=int, default=1,
                       help="uvicorn worker processes (needs a real Redis: RESERVES_REDIS_URL)")
    serve.add_argument("--log-level", default="info",
                       choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--no-access-log", action="store_true", help="turn the access log off")
    serve.set_defaults(func=_serve)

    token = subparsers.add_parser(
        "token", help="create, list or revoke API tokens",
        description="Tokens kept in Redis as SHA-256 digests only: in RESERVES_REDIS_URL, or "
        "with --url/--token through a running `reserves serve` (the embedded default's store "
        "lives inside that process).")
    actions = token.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a token and print it (shown only once)")
    create.add_argument("--role", choices=["admin", "service"], required=True)
    create.add_argument("--name", help="its identity in the audit log (default: <role>-<time>)")
    add_remote_arguments(create)
    create.set_defaults(func=_token_create)
    listing = actions.add_parser("list", help="list the stored tokens (names and roles)")
    add_remote_arguments(listing)
    listing.set_defaults(func=_token_list)
    revoke = actions.add_parser("revoke", help="revoke the stored tokens of a name")
    revoke.add_argument("name")
    add_remote_arguments(revoke)
    revoke.set_defaults(func=_token_revoke)


def _client_and_settings() -> tuple[object, object]:
    from engine.config import Settings
    from engine.connection import sync_client

    settings = Settings.from_env()
    return sync_client(settings), settings


def _audit(client: object, settings: object, action: str, detail: dict[str, str]) -> None:
    from engine.drivers import SyncDriver
    from engine.ops import Ops
    from engine.registry import CurrencyRegistry

    ops = Ops(settings, CurrencyRegistry.load(settings.currencies_path))  # type: ignore[attr-defined]
    actor = f"cli:{os.environ.get('USER', 'unknown')}"
    SyncDriver(client).run(ops.audit(actor, action, "local", detail))


def _remote(args: argparse.Namespace, what: str) -> bool | None:
    """True: go over HTTP (--url); False: use RESERVES_REDIS_URL; None: refused (embedded)."""
    from engine.config import Settings

    if args.url:
        return True
    if Settings.from_env().redis_url is None:
        print(f"reserves token {args.action}: {EMBEDDED_REFUSAL.format(what=what)}",
              file=sys.stderr)
        return None
    return False


def _token_create(args: argparse.Namespace) -> int:
    from api.auth import Role, create_token

    remote = _remote(args, "create it")
    if remote is None:
        return 2
    name = args.name or f"{args.role}-{time.strftime('%Y%m%d%H%M%S')}"
    if remote:
        try:
            data = remote_json(args, "POST", "/wallet/reserves/tokens",
                               {"role": args.role, "name": name})
        except RemoteError as exc:
            print(f"reserves token create: {exc}", file=sys.stderr)
            return 1
        print(data["token"])
        print(f"created {args.role} token {name!r} at {args.url}; it is shown only this once",
              file=sys.stderr)
        return 0
    client, settings = _client_and_settings()
    token = create_token(client, settings, Role(args.role), name, int(time.time() * 1000))
    _audit(client, settings, "token_create", {"name": name, "role": args.role})
    print(token)
    print(f"created {args.role} token {name!r}; it is shown only this once", file=sys.stderr)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from api.auth import stored_tokens

    remote = _remote(args, "list them")
    if remote is None:
        return 2
    if remote:
        try:
            rows: Any = remote_json(args, "GET", "/wallet/reserves/tokens")["tokens"]
        except RemoteError as exc:
            print(f"reserves token list: {exc}", file=sys.stderr)
            return 1
    else:
        client, settings = _client_and_settings()
        rows = stored_tokens(client, settings)
    for row in rows:
        print(f"{row['name']:<32} {row['role']:<8} created_ms={row['created_ms']} "
              f"digest={row['digest']}")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from api.auth import revoke_token

    remote = _remote(args, "revoke it")
    if remote is None:
        return 2
    if remote:
        try:
            data = remote_json(args, "POST", f"/wallet/reserves/tokens/{args.name}/revoke")
        except RemoteError as exc:
            print(f"reserves token revoke: {exc}", file=sys.stderr)
            return 1
        print(f"revoked {data['revoked']} token(s) named {args.name!r}")
        return 0
    client, settings = _client_and_settings()
    removed = revoke_token(client, settings, args.name)
    if removed:
        _audit(client, settings, "token_revoke", {"name": args.name})
    print(f"revoked {removed} token(s) named {args.name!r}")
    return 0 if removed else 1


def _first_admin_token() -> None:
    """With no token configured anywhere, create an admin token and print it once."""
    from api.auth import Role, create_token, stored_tokens

    client, settings = _client_and_settings()
    if settings.admin_tokens or settings.service_tokens or stored_tokens(client, settings):  # type: ignore[attr-defined]
        return
    token = create_token(client, settings, Role.admin, "first-admin", int(time.time() * 1000))
    # Printed, not logged: log files outlive the terminal.
    print(f"\n  No API token was configured; created an admin token (shown only once):\n\n"
          f"    {token}\n\n  Use it as: Authorization: Bearer <token>\n", flush=True)


def _restore_embedded() -> None:
    """The embedded fakeredis starts empty: reload the hot state from the SQLite ledger, so
    balances survive a restart and new event ids continue after the persisted ones."""
    from persistence.rebuild import rebuild

    client, settings = _client_and_settings()
    report = rebuild(client, settings, settings.database_url)  # type: ignore[attr-defined]
    if report.accounts_count:
        log.info("embedded store restored from %s: %d accounts, %d pending holds",
                 settings.database_url, report.accounts_count,  # type: ignore[attr-defined]
                 report.pending_holds_count)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, plus this process's own (the root logger, as `reserves` set it up):
    uvicorn applies it in each worker process too, where the app's log lines would otherwise
    have no handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["reserves"] = {"format": LOG_FORMAT}
    config["handlers"]["reserves"] = {"class": "logging.StreamHandler", "formatter": "reserves",
                                      "stream": "ext://sys.stderr"}
    config["root"] = {"handlers": ["reserves"],
                      "level": logging.getLevelName(logging.getLogger().getEffectiveLevel())}
    return config


def _check_liquidity_policies(settings: Any) -> str | None:
    """A bad RESERVES_LIQUIDITY_POLICIES file: what is wrong (file and field), before serving."""
    from api.liquidity import load_policies
    from engine.liquidity.policy import PolicyError
    from engine.registry import CurrencyRegistry

    try:
        load_policies(CurrencyRegistry.load(settings.currencies_path))
    except PolicyError as exc:
        return str(exc)
    return None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from engine.config import Settings
    from persistence.migrate import ensure_schema

    settings = Settings.from_env()
    if args.workers > 1 and settings.redis_url is None:
        print("--workers > 1 needs a shared Redis (RESERVES_REDIS_URL): the embedded fakeredis "
              "lives inside one process", file=sys.stderr)
        return 2
    if (refused := _check_liquidity_policies(settings)) is not None:
        print(f"reserves serve: {refused}", file=sys.stderr)
        return 2
    ensure_schema(settings.database_url)
    if settings.redis_url is None:
        _restore_embedded()
    _first_admin_token()
    # the served app (each worker process builds its own) freezes its start-up heap
    os.environ.setdefault("RESERVES_GC_FREEZE", "1")
    options = {"host": args.host, "port": args.port, "log_level": args.log_level,
               "access_log": not args.no_access_log, "proxy_headers": False,
               "timeout_graceful_shutdown": 10, "log_config": _log_config()}
    if args.workers > 1:
        uvicorn.run("api.app:create_app", factory=True, workers=args.workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)
    return 0
