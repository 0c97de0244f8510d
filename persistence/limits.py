"""Every bound the persister keeps, in one place, with its unit in the name."""

# Journal entries read (and written to the database in one transaction) per batch.
batch_count_max = 2000

# How long one XREADGROUP waits for new entries before the loop looks around again.
read_block_ms = 1000

# On a Redis Cluster (streams in several slots, no multi-stream BLOCK): pause when all are empty.
cluster_idle_poll_ms = 100

# A pending entry idle this long belongs to a dead (or stuck) consumer and is reclaimed.
claim_idle_ms = 30_000
# How often the pending entries of other consumers are looked at.
claim_interval_s = 5.0
# A consumer with nothing pending and idle this long is removed from its group.
consumer_idle_ms_max = 3_600_000

# How often the streams are trimmed below what every group acknowledged.
trim_interval_s = 5.0

# Retry of transient database / Redis errors: exponential backoff with full jitter.
backoff_s_base = 0.05
backoff_s_max = 5.0

# On SIGTERM (or stop), work already taken is finished for at most this long.
shutdown_deadline_s = 10.0

# drain(): how long it may run by default.
drain_timeout_s_default = 30.0

# SQLite: rows per executemany call of the bulk writes (Postgres takes a batch in one COPY).
insert_rows_max = 500

# Analytics window.
period_days_min = 1
period_days_max = 3650

# Rebuild: Redis commands per pipeline round trip.
rebuild_pipeline_max = 1000

# Scheduled reports (report_schedule.py).
# A period's report is written this long after the period closes, so that the persister has
# written the period's last events first.
report_grace_s = 60
# How often a scheduler looks for closed periods.
report_check_interval_s = 60.0
# Catch-up after a process was down: at most this many of the last closed periods of each kind.
report_catch_up_count_max = {"daily": 7, "weekly": 4, "monthly": 3}
# A claim not finished within this long was abandoned (its process died): another may take it.
report_claim_lease_s = 900.0
# Posting a run's reports to the webhooks: how long delivery (with its retries) may take.
report_post_deadline_s = 120.0

# The audit log (`reserves audit`, GET /wallet/reserves/audit): entries per page.
audit_page_default = 50
audit_page_max = 500
