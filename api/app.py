"""The Starlette app: create_app() wires the engine, the token book, the route modules and
the background work of one API process (sweeper, saga recovery, monitor, and in embedded
mode the persister).

Route modules: each has `routes`, and may have `openapi_paths` (merged into /openapi.json)
and `async start(ctx)` / `async stop(ctx)`. The optional ones are skipped when absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from api import errors, limits, metrics, openapi
from api.auth import TokenBook
from api.context import ApiConfig, ApiContext, StatusCache
from api.middleware import BodyLimit
from api.ratelimit import RateLimiter
from engine.config import Settings
from engine.engine import ReserveEngine
from engine.errors import ReserveError

log = logging.getLogger("reserves.api")

CORE_MODULES = ("api.system", "api.reserves", "api.holds", "api.audit")
OPTIONAL_MODULES = ("api.flows", "api.dashboard", "api.liquidity", "api.tokens")


def route_modules() -> list[ModuleType]:
    modules = [importlib.import_module(name) for name in CORE_MODULES]
    for name in OPTIONAL_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return modules


async def _every(interval_s: float, what: str, work: Callable[[], Awaitable[Any]]) -> None:
    """Run work forever, every interval_s; a failure is logged, never fatal."""
    while True:
        try:
            await work()
        except ReserveError as exc:
            log.warning("%s: %s", what, exc.message)
        except Exception:
            log.exception("%s failed", what)
        await asyncio.sleep(interval_s)


def _start_persister(ctx: ApiContext) -> tuple[threading.Thread, threading.Event]:
    from engine.connection import sync_client
    from persistence.worker import Persister

    persister = Persister(sync_client(ctx.settings), ctx.settings, ctx.settings.database_url,
                          consumer="api-embedded")
    stop = threading.Event()
    thread = threading.Thread(target=persister.run, args=(stop,), name="reserves-persister",
                              daemon=True)
    thread.start()
    ctx.persister = persister
    return thread, stop


def _monitor_snapshot(ctx: ApiContext) -> Any:
    from engine.monitoring.alerts import MetricsSnapshot

    requests, failures, p99_ms = metrics.window.snapshot()
    money_requests, refusals = metrics.window.refusals()
    lag = ctx.extras.get("lag")
    return MetricsSnapshot(
        persister_lag_ms=int(lag["oldest_unpersisted_age_s"] * 1000) if lag else None,
        requests_count=requests, errors_count=failures, latency_p99_ms=p99_ms,
        money_requests_count=money_requests, refusals_count=refusals)


async def _refresh_lag(ctx: ApiContext) -> None:
    from api.system import journal_lag

    ctx.extras["lag"] = await journal_lag(ctx)


def create_app(settings: Settings | None = None, *, engine: ReserveEngine | None = None,
               config: ApiConfig | None = None) -> Starlette:
    settings = settings or (engine.settings if engine else Settings.from_env())
    config = config or ApiConfig.from_env(settings)
    modules = route_modules()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own_engine = engine is None
        eng = engine or ReserveEngine.from_settings(settings)
        burst = config.rate_per_s * limits.rate_burst_factor
        ctx = ApiContext(settings, config, eng, TokenBook(settings, eng.client),
                         RateLimiter(config.rate_per_s, burst), StatusCache(eng))
        app.state.ctx = ctx
        tasks: list[asyncio.Task[None]] = []
        persister: tuple[threading.Thread, threading.Event] | None = None
        if config.persist_in_process:
            persister = _start_persister(ctx)
        if config.background_tasks:
            from engine.monitoring.monitor import Monitor

            ctx.monitor = app.state.monitor = Monitor(eng)
            ctx.monitor.snapshot_source = lambda: _monitor_snapshot(ctx)
            await ctx.monitor.start()
            tasks.append(asyncio.create_task(_every(limits.sweep_interval_s, "sweeper", eng.sweep)))
            tasks.append(asyncio.create_task(_every(5.0, "journal lag", lambda: _refresh_lag(ctx))))
            if settings.redis_cluster:
                tasks.append(asyncio.create_task(
                    _every(limits.saga_recover_interval_s, "saga recovery", eng.recover_sagas)))
            from persistence.report_schedule import scheduler_from_env

            reports = scheduler_from_env(settings, eng.registry)  # RESERVES_REPORTS_DIR
            if reports is not None:
                tasks.append(asyncio.create_task(
                    _every(reports.interval_s, "reports", reports.run_once)))
        for module in modules:
            if hasattr(module, "start"):
                await module.start(ctx)
        if config.gc_freeze:
            # What start-up built (modules, app, engine) lives as long as the process: out of
            # the collector's reach, so that a full collection under load does not walk it (one
            # took 30+ ms, a stall of every request in flight, in the first seconds of serving).
            gc.collect()
            gc.freeze()
            log.info("start-up heap frozen out of the collector's walks: %d objects",
                     gc.get_freeze_count())
        log.info("reserves API ready: redis=%s database=%s persister=%s",
                 "embedded" if settings.redis_url is None else "external",
                 "sqlite" if settings.database_url.startswith("sqlite") else "postgres",
                 "in-process" if persister else "external")
        try:
            yield
        finally:
            for module in reversed(modules):
                if hasattr(module, "stop"):
                    await module.stop(ctx)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if ctx.monitor is not None:
                await ctx.monitor.stop()
            if persister is not None:
                persister[1].set()
                await asyncio.to_thread(persister[0].join, 10.0)
            if own_engine:
                await eng.close()

    app = Starlette(
        routes=[route for m in modules for route in m.routes],
        middleware=[Middleware(BodyLimit, body_bytes_max=config.body_bytes_max)],
        exception_handlers=errors.handlers,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.openapi = openapi.build([getattr(m, "openapi_paths", {}) for m in modules])
    return app
