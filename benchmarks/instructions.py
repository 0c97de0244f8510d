"""Instructions per operation, counted by callgrind: the same count for the same work whatever
else the machine runs (timings on a shared 2-core host drift by tens of percent).

    python -m benchmarks.instructions redis    # Redis, per operation of a hold_batch call
    python -m benchmarks.instructions client   # the engine's client stack, Redis stubbed

Each side runs at two sizes and reports the difference over the difference in operations, so
start-up and loading cancel out. Needs valgrind (Debian's package) and, for `redis`,
redis-server; takes about half a minute each.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

BATCH_OPS = 64  # operations per hold_batch call (reserve batches, then commit batches)
REDIS_BATCHES = (10, 60)  # reserve + commit batch pairs at the two sizes
CLIENT_CYCLES = (1_280, 12_800)  # reserve -> commit cycles at the two sizes
CLIENTS = 64
STARTUP_WAIT_S = 20.0


def _total(out_file: Path) -> int:
    match = re.search(r"^(?:summary|totals): (\d+)", out_file.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no totals in {out_file}")
    return int(match.group(1))


def _redis_run(batch_pairs: int, port: int, source: str | None) -> int:
    """Total instructions of a redis-server that ran batch_pairs reserve + commit batches."""
    import redis

    from benchmarks import services
    from engine.batching import batch_script
    from engine.config import Settings
    from engine.scripts import SOURCES
    from engine.service import ReserveService

    with tempfile.TemporaryDirectory(prefix="reserves-cg-") as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "redis-server",
             "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port, decode_responses=True)
        try:
            services.wait_ready(client.ping, "redis-server under callgrind", STARTUP_WAIT_S,
                                poll_s=0.1, errors=(redis.ConnectionError,))
        except BaseException:
            proc.kill()
            raise
        settings = replace(Settings(), redis_url=f"redis://127.0.0.1:{port}/0", key_prefix="cg")
        service = ReserveService(client, settings)
        service.top_up_reserve("USD", "10000000000", "fiat", "seed")
        ops, spec = service.ops, service.ops.reserve_spec("USD", "fiat")
        sha = client.script_load(source or SOURCES["hold_batch"].source)
        for b in range(batch_pairs):
            for kind in "rc":
                commands = []
                for i in range(BATCH_OPS):
                    ref = f"r{b}-{i}"
                    ops._hold_labels[ref] = spec.label
                    op = ops.reserve(spec, 1, ref, "bench") if kind == "r" else ops.commit(ref)
                    commands.append(op.send(None))
                script = batch_script(commands)
                client.evalsha(sha, len(script.keys), *script.keys, *script.args)
        try:
            client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it goes
        proc.wait()
        return _total(out)


def redis_per_op(source: str | None = None) -> float:
    from benchmarks import services

    port = services.free_port()
    small, large = (_redis_run(n, port, source) for n in REDIS_BATCHES)
    return (large - small) / ((REDIS_BATCHES[1] - REDIS_BATCHES[0]) * 2 * BATCH_OPS)


# -- the client stack with Redis stubbed (run in a child process under callgrind) --------------

_RESERVED = [0, 10**12, 1, 7, "pending", 1, 0, 1000, 0, 0, "bench"]
_COMMITTED = [0, 10**12 - 1, 0, 8, "committed", 1, 1, 1000, 0, 1000, "bench"]


def _stub_main(cycles: int) -> None:
    """reserve -> commit cycles of CLIENTS callers through ReserveEngine and the batching
    driver; the batch call is packed with hiredis as it would be sent, and answered here."""
    import uvloop
    from hiredis import pack_command

    from engine.batching import BatchingDriver
    from engine.commands import Script
    from engine.config import Settings
    from engine.engine import ReserveEngine
    from engine.types import Account

    class NoRedis:
        connection_pool = None

        def register_script(self, source: str) -> None:
            return None

    class StubDriver(BatchingDriver):
        async def _execute(self, command: Any) -> Any:
            assert isinstance(command, Script)
            pack_command(("EVALSHA", "0" * 40, len(command.keys), *command.keys, *command.args))
            await asyncio.sleep(0)
            if command.name != "hold_batch":
                return list(_RESERVED if command.name == "reserve" else _COMMITTED)
            accounts = int(command.args[6])
            count = int(command.args[7 + accounts])
            kinds = command.args[8 + accounts::8][:count]
            return [list(_RESERVED if kind == "r" else _COMMITTED) for kind in kinds]

    async def caller(engine: ReserveEngine, spec: Any, index: int, count: int) -> None:
        for n in range(count):
            ref = f"c{index}-{n}"
            await engine.run(engine.ops.reserve(spec, 1, ref, "bench"))
            await engine.commit_reserve(ref)

    async def main() -> None:
        engine = ReserveEngine(NoRedis(), Settings(), batching=False)
        engine.driver = StubDriver(NoRedis())
        spec = engine.ops.reserve_spec("USD", "fiat")
        engine.ops._accounts[spec.label] = Account(spec.label, spec.currency, spec.kind, 1, "x", 1)
        await asyncio.gather(*(caller(engine, spec, i, cycles // CLIENTS)
                               for i in range(CLIENTS)))

    uvloop.run(main())


def client_per_op() -> float:
    totals = []
    for cycles in CLIENT_CYCLES:
        with tempfile.TemporaryDirectory(prefix="reserves-cg-") as tmp:
            out = Path(tmp) / "callgrind.out"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            sys.executable, "-m", "benchmarks.instructions", "_stub",
                            str(cycles)], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            totals.append(_total(out))
    ops = 2 * (CLIENT_CYCLES[1] - CLIENT_CYCLES[0])
    return (totals[1] - totals[0]) / ops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("side", choices=("redis", "client", "_stub"),
                        help="redis: per batched operation in Redis; client: per operation in "
                             "the engine's client stack with Redis stubbed")
    parser.add_argument("cycles", nargs="?", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--script", type=Path,
                        help="redis: a variant of the assembled hold_batch source to count")
    args = parser.parse_args(argv)
    if args.side == "_stub":
        _stub_main(args.cycles)
        return 0
    if args.side == "redis":
        source = args.script.read_text() if args.script else None
        print(f"Redis: {redis_per_op(source):,.0f} instructions per batched operation "
              f"(reserve and commit batches of {BATCH_OPS})")
    else:
        print(f"client: {client_per_op():,.0f} instructions per operation "
              f"({CLIENTS} callers, reserve -> commit, Redis stubbed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
