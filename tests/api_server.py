"""`reserves serve` as a real process on a free loopback port, for tests through the real HTTP
stack (uvicorn, httptools, the OS's sockets).

    with api_server(env={...}) as server:
        httpx.get(server.url + "/health")

Tokens: ADMIN_TOKEN and SERVICE_TOKEN are configured unless env overrides them. Output goes to
server.log_path (a file, so a chatty server never blocks on a full pipe)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks import services as launch
from benchmarks.services import free_port

ADMIN_TOKEN = "test-admin-token-0123456789"
SERVICE_TOKEN = "test-service-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
SERVE_STOP_TIMEOUT_S = 15.0


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path,
                 timeout_s: float = 30.0, healthy: bool = True) -> None:
    """Until /health says 200 (healthy) or answers at all (not healthy: Redis may be down)."""
    launch.wait_healthy(url, process, lambda: log_path.read_text(errors="replace"), timeout_s,
                        healthy)


@contextmanager
def api_server(tmp_path: Path, env: dict[str, str] | None = None, workers: int = 1,
               args: tuple[str, ...] = (), healthy: bool = True) -> Iterator[Server]:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RESERVES_")}
    full_env.update({"RESERVES_ADMIN_TOKENS": ADMIN_TOKEN, "RESERVES_SERVICE_TOKENS": SERVICE_TOKEN,
                     "RESERVES_DATABASE_URL": f"sqlite:///{tmp_path / 'reserves.db'}"})
    full_env.update(env or {})
    log_path = tmp_path / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            launch.serve_argv(port, workers, *args),
            env=full_env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_healthy(server.url, process, log_path, healthy=healthy)
        yield server
    finally:
        launch.stop_process(process, SERVE_STOP_TIMEOUT_S)
