"""Scenario 4: the reserve endpoint under load from a separate process (wrk with a Lua body
script), against `reserves serve` with 1 and 2 uvicorn workers.

Each request locks 1 USD (100 minor units) under its own reference. Afterwards every 2xx must
be a hold, nothing else may have been locked (a request cut off by the end of the run may
still have landed: at most one per connection), and total >= locked >= 0."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from benchmarks import invariants, services
from benchmarks.stats import Cell
from engine.config import Settings
from engine.connection import sync_client
from engine.service import ReserveService

TOKEN = "bench-service-token"
AMOUNT_MINOR = 100  # "1" USD
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0  # uvicorn and its workers after SIGTERM
WRK_TIMEOUT_S = 5  # per request
PATH = "/wallet/reserves/USD/fiat/reserve"

WRK_SCRIPT = r"""
local counter = 0
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  prefix = args[1] .. "-" .. tid .. "-"
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  counter = counter + 1
  local body = '{"amount": "1", "reference_id": "' .. prefix .. counter ..
    '", "operation_type": "bench"}'
  return wrk.format(nil, nil, nil, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, "write": %%d, ' ..
    '"status": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d, "p999_us": %%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _serve(settings: Settings, database_url: str, workers: int, port: int,
           log: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RESERVES_REDIS_URL": settings.redis_url or "",
           "RESERVES_KEY_PREFIX": settings.key_prefix, "RESERVES_DATABASE_URL": database_url,
           "RESERVES_SERVICE_TOKENS": TOKEN, "RESERVES_ADMIN_TOKENS": TOKEN + "-admin",
           "RESERVES_RATE_LIMIT_PER_S": "0", "RESERVES_PERSIST_IN_PROCESS": "0"}
    argv = services.serve_argv(port, workers, "--log-level", "warning", "--no-access-log")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log,
                            start_new_session=True)

    def read_log() -> str:
        log.seek(0)
        return str(log.read().decode(errors="replace"))

    try:
        services.wait_healthy(f"http://127.0.0.1:{port}", proc, read_log, START_TIMEOUT_S,
                              poll_s=0.2)
    except BaseException:
        _stop(proc)
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    services.stop_process(proc, STOP_TIMEOUT_S, group=True)


def _wrk(port: int, clients: int, duration_s: float, ref_prefix: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"token": TOKEN})
    try:
        argv = ["wrk", "-t", "1", "-c", str(clients), "-d", f"{max(1, round(duration_s))}s",
                "--timeout", f"{WRK_TIMEOUT_S}s", "-s", script.name,
                f"http://127.0.0.1:{port}{PATH}", "--", ref_prefix]
        done = subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=duration_s + 60)
    finally:
        os.unlink(script.name)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return dict(json.loads(line.removeprefix("WRK_JSON ")))
    raise RuntimeError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")


def run(settings: Settings, database_url: str, plan: Any,
        tick: Callable[[str], None]) -> list[Cell]:
    results = []
    for workers in plan.http_workers_counts:
        prefix = f"{settings.key_prefix}h{workers}"
        cell_settings = replace(settings, key_prefix=prefix)
        client = sync_client(cell_settings)
        service = ReserveService(client, cell_settings)
        service.top_up_reserve("USD", str(plan.balance_minor // 100), "fiat", "seed")
        label = service.ops.reserve_spec("USD", "fiat").label
        port = services.free_port()
        log = tempfile.TemporaryFile()  # the server's log: a pipe could fill and block it
        try:
            proc = _serve(cell_settings, database_url, workers, port, log)
        except BaseException:
            log.close()
            client.close()
            raise
        try:
            for clients in plan.http_clients_counts:
                tick(f"http: {workers} worker(s), {clients} connections")
                (before_total, before_locked), = invariants.balances(
                    client, service.ops.keys, [label]).values()
                figures = _wrk(port, clients, plan.http_s, f"w{workers}c{clients}")
                cell = Cell("http", f"POST reserve, {workers} worker(s)", clients)
                errors = sum(figures[k] for k in ("connect", "read", "write", "status", "timeout"))
                ok_count = figures["requests"] - errors
                cell.ops = ok_count
                cell.duration_s = figures["duration_us"] / 1e6
                cell.p50_ms, cell.p99_ms, cell.p999_ms = (figures[k] / 1000 for k in
                                                          ("p50_us", "p99_us", "p999_us"))
                cell.reserve_p99_ms = cell.p99_ms
                cell.errors = errors
                cell.extra["wrk"] = figures
                cell.extra["load_1m"] = round(os.getloadavg()[0], 2)
                time.sleep(0.5)  # requests cut off by wrk's end may still be answered
                (total, locked), = invariants.balances(client, service.ops.keys,
                                                      [label]).values()
                landed = (locked - before_locked) // AMOUNT_MINOR
                if not total >= locked >= 0:
                    cell.violations.append(f"oversold: total {total} locked {locked}")
                if total != before_total or (locked - before_locked) % AMOUNT_MINOR:
                    cell.violations.append(f"conservation: ({total}, {locked}) after "
                                           f"({before_total}, {before_locked})")
                if not ok_count <= landed <= ok_count + clients:
                    cell.violations.append(f"{ok_count} requests answered 2xx, {landed} holds")
                results.append(cell)
        finally:
            _stop(proc)
            log.close()
            invariants.delete_prefix(client, prefix)
            client.close()
    return results
