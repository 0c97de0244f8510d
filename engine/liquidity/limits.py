"""Every bound of the automated top-ups, in one place, with its unit in the name."""

# Provider calls: attempts per request before it is flagged to an operator, and the backoff
# between them (base * 2^(attempt - 1), at most the max).
provider_attempts_max = 5
provider_backoff_s_base = 2.0
provider_backoff_s_max = 300.0
# A claimed attempt is given this long before another process may take the request over.
provider_claim_s = 60
# A request the provider accepted but never called back about is flagged after this long.
callback_wait_s_max = 6 * 3600
# A callback's timestamp must be within this many seconds of our clock (replays refused).
callback_window_s = 300
# Callback bodies larger than this are refused before verification.
callback_bytes_max = 16 * 1024

# Policies: trigger windows (one request per reserve per window), and the file's size.
trigger_window_s_min = 60
trigger_window_s_max = 7 * 24 * 3600
trigger_window_s_default = 3600
policies_count_max = 256

# Request records are kept this long (for GET and to answer repeated callbacks), far beyond
# the engine's retention of a top-up's idempotency record.
request_record_ttl_s = 30 * 24 * 3600
# Requests shown by GET .../liquidity/requests and on the dashboard.
requests_listed_max = 200
requests_listed_default = 20
# Requests the background loop looks at per pass (due for sending, or waiting too long).
requests_per_pass_max = 256

# The background loop's period.
check_interval_s = 5.0
# The simulated provider's scheduled callbacks in flight.
simulated_callbacks_in_flight_max = 1_000
