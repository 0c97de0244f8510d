"""Monitoring: alerts (with hysteresis, state in Redis, journalled for Postgres), forecasts of
each reserve's outflow, webhook delivery, reports, and the gauges Prometheus scrapes."""
