"""The monitor: a background asyncio task that, every check_interval_s, samples every reserve,
raises and clears alerts, and hands new transitions to the webhooks. Several API processes may
each run one: samples are bucketed and alert transitions happen once (see alerts.AlertBook).

Wiring in the API (a few lines in the lifespan):

    monitor = Monitor(engine)                 # config from the environment
    monitor.snapshot_source = my_metrics_snapshot   # optional: () -> MetricsSnapshot
    await monitor.start(); app.state.monitor = monitor
    ...
    await monitor.stop()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from engine.engine import ReserveEngine
from engine.monitoring import limits, metrics
from engine.monitoring.alerts import AlertBook, MetricsSnapshot
from engine.monitoring.config import MonitorConfig
from engine.monitoring.forecast import SampleBook
from engine.monitoring.webhooks import WebhookSender
from engine.types import Balance

log = logging.getLogger(__name__)


class Monitor:
    def __init__(self, engine: ReserveEngine, config: MonitorConfig | None = None,
                 sender: WebhookSender | None = None,
                 interval_s: float = limits.check_interval_s) -> None:
        self.engine = engine
        self.config = config or MonitorConfig.from_env(engine.registry)
        clock = engine.ops.clock_ms
        keys = engine.ops.keys
        self.alerts = AlertBook(engine.client, keys, clock)
        self.samples = SampleBook(engine.client, keys, clock)
        self.sender = sender or WebhookSender(self.config.webhook_urls, self.config.webhook_secret)
        self.alerts.on_transition.append(self._notify)
        self.interval_s = interval_s
        self.snapshot_source: Callable[[], MetricsSnapshot | None] | None = None
        self._task: asyncio.Task[None] | None = None

    def _notify(self, event: dict[str, Any]) -> None:
        kind = {"raise": "alert_raised", "clear": "alert_cleared"}[event["action"]]
        self.sender.submit({"type": kind, **event})

    async def check_once(self, snapshot: MetricsSnapshot | None = None) -> list[dict[str, Any]]:
        balances = await self.engine.all_reserve_balances()
        for balance in balances:
            await self.samples.record(balance)
            metrics.monitor_utilization.labels(balance.account.label).set(
                float(balance.utilization_percentage))
        if snapshot is None and self.snapshot_source is not None:
            snapshot = self.snapshot_source()
        return await self.alerts.evaluate(balances, self.config.floors_minor, snapshot,
                                          self.config.thresholds)

    async def forecast(self, balance: Balance) -> dict[str, Any]:
        """The `forecast` object for the status and balance responses."""
        return await self.samples.forecast(balance)

    async def start(self) -> None:
        self.sender.start()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="reserves-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.sender.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
                metrics.monitor_checks.labels("ok").inc()
            except Exception:  # Redis down for a moment: try again next round
                metrics.monitor_checks.labels("error").inc()
                log.exception("monitor check failed")
            await asyncio.sleep(self.interval_s)
