"""Prometheus metrics of alerts, forecasts, webhooks, the engine's caches and the flows'
outcomes (default registry, so the API's /metrics exports them). Gauges carry floats: they are
for display, never for arithmetic."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from engine import caches

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

# The design document's "operation success rates for swaps and trading": each flow that ends,
# by kind and terminal state; the success rate is completed over all, computed by the query.
FLOW_OUTCOMES: dict[str, tuple[str, ...]] = {
    "swap": ("completed", "failed"),
    "buy": ("completed", "failed", "expired", "settlement_failed"),
    "sell": ("completed", "failed", "expired", "settlement_failed"),
}
flow_outcomes = Counter("reserves_flow_outcomes_total",
                        "Flows (swap, buy, sell) ended by this process, by terminal state",
                        ["flow", "outcome"])
for _flow, _outcomes in FLOW_OUTCOMES.items():
    for _outcome in _outcomes:
        flow_outcomes.labels(_flow, _outcome)  # exported at 0 before the first one ends


def count_flow_end(action: str, detail: dict[str, Any]) -> None:
    """A flow's journalled terminal action (swap_completed, sell_settlement_failed, ...), once
    per flow: what happens to a flow already ended (a success after its expiry,
    `settled_after_expiry`; an operator's settlement, detail `settled_by`) is not a second end."""
    flow, _, outcome = action.partition("_")
    if outcome in FLOW_OUTCOMES.get(flow, ()) and "settled_by" not in detail:
        flow_outcomes.labels(flow, outcome).inc()


class CacheCollector(Collector):
    """The design document's "cache hit rates": the engine's caches count their hits and misses
    as plain integers (engine/caches.py); this reads them at each scrape, as counters."""

    def collect(self) -> Iterator[Metric]:
        hits = CounterMetricFamily("reserves_cache_hits", "Lookups found in an engine cache",
                                   labels=["cache"])
        misses = CounterMetricFamily("reserves_cache_misses",
                                     "Lookups not found in an engine cache", labels=["cache"])
        for name, (hit_count, miss_count) in sorted(caches.counts().items()):
            hits.add_metric([name], hit_count)
            misses.add_metric([name], miss_count)
        yield hits
        yield misses


cache_collector = CacheCollector()
REGISTRY.register(cache_collector)

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
