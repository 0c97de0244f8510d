"""Every bound the monitoring keeps, in one place, with its unit in the name."""

# Utilization thresholds (percent) of the alert levels, lowest first.
warning_pct = 75
critical_pct = 90
emergency_pct = 95
# An alert clears only when its value falls this far below the threshold that raised it.
hysteresis_pct = 5
# A floor alert clears when the available balance is back above floor * (100 + this) / 100.
floor_hysteresis_pct = 5

# System alerts (inputs come from a metrics snapshot the API feeds).
persister_lag_s_max = 30
error_rate_pct_max = 5
latency_p99_ms_max = 1000
# System alerts clear below this share (percent) of their threshold.
system_clear_share_pct = 80
# An error rate on fewer requests than this says nothing yet.
error_rate_requests_min = 20
# A p99 on fewer requests than this says nothing yet: below 100 requests the 99th percentile is
# the slowest one, so a single slow request would raise the alert.
latency_requests_min = 100
# Refusals: 409 answers of the money routes (api/metrics.py MONEY_ROUTES), over those routes'
# requests. They are the service answering correctly, so they never count as errors; a high
# share still means reserves too short (or a client repeating a spent reference).
refusal_rate_pct_max = 10
refusal_rate_requests_min = 20

# Alert history kept in Redis (newest first).
history_count_max = 200

# Background check: how often the monitor looks at every reserve.
check_interval_s = 1.0

# Utilization samples per account (sorted set, one per sample_interval_ms bucket).
sample_interval_ms = 2_000
samples_count_max = 3_600
# Forecast windows (ms): the net outflow rate is measured over each.
forecast_windows_ms = (5 * 60_000, 60 * 60_000)
# No rate from a window whose points span less than this or are fewer than this: right after a
# single top-up, 10 s of history extrapolated to an hour is noise, not a forecast.
forecast_span_ms_min = 60_000
forecast_samples_min = 5
# The rate of a window is the median of the rates of this many equal pieces of it (odd: the
# median is one piece's rate), so a lone top-up or release moves at most two pieces.
forecast_pieces_count = 9
# Target utilization (percent) the suggested top-up returns a reserve to.
target_utilization_pct = 50

# Webhooks.
webhook_queue_count_max = 1_000
webhook_attempts_max = 5
webhook_backoff_s_base = 0.5
webhook_backoff_s_max = 30.0
webhook_timeout_s = 5.0
webhook_urls_count_max = 16

# Dashboard / recent transactions.
recent_count_max = 200
recent_count_default = 25
history_points_max = 360

# Reports: journal events read from Redis when there is no database.
report_events_max = 1_000_000
report_batch_count = 1_000
