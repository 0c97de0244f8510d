"""docs/grafana-dashboard.json: every metric it queries is exported by /metrics of a real
`reserves serve` after some traffic (a top-up, a lock past 90 %, an alert, its webhook), and
every metric of api/metrics.py and engine/monitoring/metrics.py has a panel."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from api import metrics as api_metrics
from engine.monitoring import metrics as monitoring_metrics
from tests.api_server import ADMIN, SERVICE, api_server
from tests.services import delete_prefix_at

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
METRIC = re.compile(r"\breserves_[a-z0-9_]+")
WAIT_S = 30.0  # bound for a hang: the monitor checks every second


def _queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def referenced() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return {name for expr in _queries(dashboard) for name in METRIC.findall(expr)}


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "reserves-overview"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"] and all(METRIC.search(t["expr"]) for t in p["targets"]), p["title"]


def test_every_metric_of_the_api_and_the_monitor_has_a_panel() -> None:
    names = referenced()
    families = [m._name for module in (api_metrics, monitoring_metrics)  # noqa: SLF001
                for m in vars(module).values() if isinstance(m, MetricWrapperBase)]
    assert len(families) >= 15  # the discovery above works
    missing = [f for f in families if not any(n == f or n.startswith(f + "_") for n in names)]
    assert missing == []


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _exported(url: str) -> set[str]:
    text = httpx.get(url + "/metrics", timeout=10.0).text
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.mark.real
def test_every_queried_metric_is_exported(tmp_path: Path, redis_url: str, key_prefix: str,
                                          webhook_url: str) -> None:
    names = referenced()
    env = {"RESERVES_REDIS_URL": redis_url, "RESERVES_KEY_PREFIX": key_prefix,
           "RESERVES_PERSIST_IN_PROCESS": "1", "RESERVES_ALERT_WEBHOOKS": webhook_url}
    try:
        with api_server(tmp_path, env=env) as server:
            base = server.url + "/wallet/reserves/USDT/crypto"
            assert httpx.post(base + "/topup", headers=ADMIN, timeout=10.0,
                              json={"amount": "1000", "source_reference": "t1"}).status_code == 200
            assert httpx.post(base + "/reserve", headers=SERVICE, timeout=10.0,
                              json={"amount": "920", "reference_id": "r1",
                                    "operation_type": "swap"}).status_code == 200
            deadline = time.monotonic() + WAIT_S
            missing = names
            while missing and time.monotonic() < deadline:
                # the status call computes the forecasts; the monitor raises the alert meanwhile
                assert httpx.get(server.url + "/wallet/reserves/status", headers=ADMIN,
                                 timeout=10.0).status_code == 200
                missing = names - _exported(server.url)
                if missing:
                    time.sleep(0.5)
            assert sorted(missing) == [], server.log()[-3000:]
            assert _Receiver.bodies, "the alert webhook was never called"
    finally:
        delete_prefix_at(redis_url, key_prefix)
