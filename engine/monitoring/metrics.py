"""Prometheus metrics of alerts, forecasts and webhooks (default registry, so the API's
/metrics exports them). Gauges carry floats: they are for display, never for arithmetic."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge

alert_open = Gauge("reserves_alert_open", "Open alerts (1) by account, kind and level",
                   ["account", "kind", "level"])
alert_transitions = Counter("reserves_alert_transitions_total",
                            "Alerts raised and cleared by this process", ["action", "kind"])
forecast_outflow = Gauge("reserves_forecast_net_outflow_per_hour",
                         "Net outflow of available balance per hour (major units)", ["account"])
forecast_to_warning = Gauge("reserves_forecast_seconds_to_warning",
                            "Estimated seconds until 75 % utilization (-1: not draining)",
                            ["account"])
forecast_to_empty = Gauge("reserves_forecast_seconds_to_empty",
                          "Estimated seconds until the available balance is 0 (-1: not draining)",
                          ["account"])
forecast_top_up = Gauge("reserves_forecast_suggested_top_up",
                        "Top-up (major units) returning the reserve to the target utilization",
                        ["account"])
monitor_utilization = Gauge("reserves_monitor_utilization_percent",
                            "Utilization percent seen by the monitor's last check", ["account"])
monitor_checks = Counter("reserves_monitor_checks_total", "Monitor checks", ["outcome"])
webhook_deliveries = Counter("reserves_webhook_deliveries_total",
                             "Webhook deliveries by outcome (delivered, failed, dropped)",
                             ["outcome"])
webhook_attempts = Counter("reserves_webhook_attempts_total", "Webhook HTTP attempts")
webhook_queue = Gauge("reserves_webhook_queue_depth", "Webhook payloads waiting")

_open_labels: set[tuple[str, str, str]] = set()


def set_open_alerts(records: Iterable[dict[str, Any]]) -> None:
    now = {(r["account"], r["kind"], r["level"]) for r in records}
    for labels in _open_labels - now:
        alert_open.remove(*labels)
    for labels in now:
        alert_open.labels(*labels).set(1)
    _open_labels.clear()
    _open_labels.update(now)


def seconds_or_minus_one(value: int | None) -> int:
    return -1 if value is None else value
