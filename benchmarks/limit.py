"""Scenario 3: the ceiling of this Redis on this machine, by redis-benchmark.

EVALSHA of the project's own per-operation reserve script (lua/reserve.lua with its journal
XADD, loaded by SCRIPT LOAD) and PING, at each client count, with and without pipelining. Each
call locks 1 minor unit under its own reference (`__rand_int__`) on an account topped up far
beyond what a run can lock; afterwards the holds and the balance must agree with the calls."""

from __future__ import annotations

import csv
import os
import io
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from benchmarks import invariants
from benchmarks.stats import Cell
from engine.config import Settings
from engine.connection import sync_client
from engine.scripts import SOURCES
from engine.service import ReserveService

# __rand_int__ draws below this (redis-benchmark keeps it in an int: 10^12 overflows to 0)
RANDOM_KEYSPACE = 2_000_000_000
# requests per run: the rate of a short calibration run times the run's duration, bounded
CALIBRATION_REQUESTS = 3_000
REQUESTS_MIN = 2_000
RUN_TIMEOUT_S = 120.0
# URL options that only tune redis-py's connections: they do not change where commands go.
_CLIENT_ONLY_OPTIONS = frozenset({
    "socket_timeout", "socket_connect_timeout", "socket_keepalive", "retry_on_timeout",
    "health_check_interval", "max_connections", "client_name", "decode_responses", "encoding",
    "encoding_errors", "timeout"})
# redis-py's TLS options of a rediss:// URL, and redis-benchmark's flag for each
_TLS_FILE_OPTIONS = {"ssl_ca_certs": "--cacert", "ssl_ca_path": "--cacertdir",
                     "ssl_certfile": "--cert", "ssl_keyfile": "--key"}


class UnsupportedURL(ValueError):
    """A part of the Redis URL that redis-benchmark cannot be given: the ceiling would run
    somewhere else than the engine."""


def available() -> bool:
    return shutil.which("redis-benchmark") is not None


def connection_args(url: str) -> list[str]:
    """redis-benchmark's options for the server, database, credentials and TLS of a redis-py
    URL, so that the ceiling runs where the engine runs (the same keys, the same account)."""
    from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

    options = parse_url(url)
    connection_class = options.pop("connection_class", None)
    argv: list[str] = []
    if connection_class is UnixDomainSocketConnection:
        argv += ["-s", options.pop("path")]
    else:
        argv += ["-h", options.pop("host", "localhost"), "-p", str(options.pop("port", 6379))]
    argv += ["--dbnum", str(options.pop("db", 0))]
    username, password = options.pop("username", None), options.pop("password", None)
    if username and not password:
        raise UnsupportedURL("redis-benchmark cannot log in as a user without a password "
                             f"(user {username!r} in the Redis URL)")
    if username:
        argv += ["--user", username]
    if password:
        argv += ["-a", password]
    if connection_class is SSLConnection:
        argv.append("--tls")
        for option, flag in _TLS_FILE_OPTIONS.items():
            if option in options:
                argv += [flag, str(options.pop(option))]
        if str(options.pop("ssl_cert_reqs", "required")).lower() in ("none", "cert_none"):
            argv.append("--insecure")
    unsupported = sorted(set(options) - _CLIENT_ONLY_OPTIONS)
    if unsupported:
        raise UnsupportedURL("redis-benchmark cannot be given the Redis URL's "
                             + ", ".join(unsupported) + ": the ceiling cells would not run "
                             "where the engine runs")
    return argv


def reserve_command(settings: Settings, ref_prefix: str = "ref") -> tuple[list[str], str]:
    """The EVALSHA arguments of one reserve call (and the account label), script loaded.
    redis-benchmark draws the same random sequence every run: each run needs its own
    ref_prefix, or its references repeat the previous run's."""
    client = sync_client(settings)
    try:
        service = ReserveService(client, settings)
        service.top_up_reserve("USD", "10000000000", "fiat", "seed")
        spec = service.ops.reserve_spec("USD", "fiat")
        k = service.ops.keys.account(spec.label)
        keys, outside = service.ops._script_keys(k, "ref")
        assert outside is None, "one shard: the index shares the account's slot"
        sha = client.script_load(SOURCES["reserve"].source)
        args = [str(service.ops.clock_ms()), "1", "1", spec.label, f"{ref_prefix}__rand_int__",
                "1", "0",
                "bench", "", str(service.ops.retention_ms), "16", "16"]
        return ["EVALSHA", sha, str(len(keys)), *keys, *args], spec.label
    finally:
        client.close()


def _run(url: str, clients: int, pipeline: int, requests: int, command: list[str]) -> dict[str, Any]:
    argv = ["redis-benchmark", *connection_args(url), "-c", str(clients), "-n", str(requests), "-P", str(pipeline),
            "-r", str(RANDOM_KEYSPACE), "-q", "--csv", *command]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          check=False)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    if done.returncode != 0 or not rows:
        raise RuntimeError(f"redis-benchmark failed: {done.stderr.strip() or done.stdout.strip()}")
    row = rows[-1]
    return {"rps": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
            "p99_ms": float(row["p99_latency_ms"]), "errors": done.stderr.count("rror")}


def run(settings: Settings, plan: Any, tick: Callable[[str], None]) -> list[Cell]:
    assert settings.redis_url is not None
    results: list[Cell] = []
    for clients in plan.clients_counts:
        for pipeline in (1, plan.limit_pipeline):
            for name in ("EVALSHA", "PING"):
                tick(f"limit: {name} {clients} clients" + (f" -P {pipeline}" if pipeline > 1 else ""))
                prefix = f"{settings.key_prefix}l{len(results)}"
                results.append(measure(replace(settings, key_prefix=prefix), name, clients,
                                       pipeline, plan.limit_s, plan.limit_requests_max))
    return results


def measure(settings: Settings, name: str, clients: int, pipeline: int, seconds: float,
            requests_max: int, scenario: str = "limit") -> Cell:
    """One redis-benchmark run of EVALSHA reserve.lua (checked afterwards) or PING, for about
    `seconds` (its request count from a short calibration run), under settings.key_prefix."""
    assert settings.redis_url is not None
    label = f"{name} reserve.lua" if name == "EVALSHA" else "PING"
    label += f", -P {pipeline}" if pipeline > 1 else ", no pipelining"
    cell = Cell(scenario, label, clients)
    if name == "EVALSHA":
        calibrate, account = reserve_command(settings, "cal")
        command, _ = reserve_command(settings, "ref")
    else:
        calibrate = command = ["PING"]
        account = ""
    calibration = _run(settings.redis_url, clients, pipeline, CALIBRATION_REQUESTS, calibrate)
    requests = max(REQUESTS_MIN, min(requests_max, int(calibration["rps"] * seconds)))
    started = time.monotonic()
    figures = _run(settings.redis_url, clients, pipeline, requests, command)
    cell.extra["wall_s"] = round(time.monotonic() - started, 3)
    cell.extra["load_1m"] = round(os.getloadavg()[0], 2)
    cell.ops = requests
    cell.duration_s = requests / figures["rps"]
    cell.p50_ms, cell.p99_ms = figures["p50_ms"], figures["p99_ms"]
    cell.errors = figures["errors"]
    if name == "EVALSHA":
        cell.violations += _check(settings, account, CALIBRATION_REQUESTS + requests)
    return cell


def _check(settings: Settings, label: str, requests: int) -> list[str]:
    """Every call locked 1 under a new reference (a drawn twice reference is a repeat that
    locks nothing): locked equals the number of holds, which is nearly the number of calls."""
    client = sync_client(settings)
    try:
        service = ReserveService(client, settings)
        keys = service.ops.keys
        (total, locked), = invariants.balances(client, keys, [label]).values()
        holds = int(client.hlen(keys.account(label).holds))
        violations = []
        if not total >= locked >= 0:
            violations.append(f"oversold: total {total} locked {locked}")
        if locked != holds:
            violations.append(f"locked {locked} but {holds} holds")
        if holds < requests * 0.99:
            violations.append(f"only {holds} holds for {requests} calls: calls were refused")
        events = int(client.xlen(keys.stream(0)))
        if events != holds + 2:  # + account_open and the seed top-up
            violations.append(f"{events} journal events for {holds} holds")
        return violations
    finally:
        invariants.delete_prefix(client, settings.key_prefix)
        client.close()
