"""Bounds of the HTTP layer, with their units in the names."""

# A larger body is refused with 413 before it is read whole.
body_bytes_max = 16 * 1024

# Per-token rate limit (a token bucket per token, per process): sustained rate and burst.
# 0 turns the limit off (RESERVES_RATE_LIMIT_PER_S).
rate_per_s_default = 2000
rate_burst_factor = 2

# Tokens looked up in Redis are remembered this long by each process (revocation delay).
token_cache_ttl_s = 5.0
token_cache_max = 10_000
token_bytes = 32

# Status responses are cached this long (and dropped on every change).
status_cache_ttl_s = 30.0

# Background tasks of `reserves serve`.
sweep_interval_s = 1.0
saga_recover_interval_s = 30.0

# GET /wallet/reserves/analytics
period_days_default = 30

# JSON integers in a request body: no amount, TTL or id needs more digits; a longer one is a
# 400 before Python's int() (which refuses over 4,300 digits with a ValueError, a 500).
json_int_digits_max = 64

# Refused changes whose caller showed no valid token (401) are audited at most this often per
# API process (a bucket of this burst): no one without a token can grow the journal at will.
unauthenticated_audit_per_s = 1.0
unauthenticated_audit_burst = 10.0
