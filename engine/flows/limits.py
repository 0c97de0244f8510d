"""Bounds of the flows, with units in the names."""

# A quote is honoured this long after it was given.
quote_ttl_s = 30
# Swap holds live this long: a crashed swap's locks free themselves after it.
swap_hold_ttl_s = 120
# Mobile-money holds wait this long for the provider's callback, then expire.
mobile_money_hold_ttl_s = 900
# Flow records (and quotes past their expiry) are kept this long for GET and repeats.
flow_record_ttl_s = 7 * 24 * 3600
# recover(): flows looked at per pass.
recover_per_pass_max = 256
# The simulated provider's scheduled callbacks in flight.
simulated_callbacks_in_flight_max = 10_000
# Callback bodies larger than this are refused before verification.
callback_bytes_max = 16 * 1024
# Scale of exact Decimal arithmetic on rates (digits).
rate_precision_digits = 80
# recover(): a flow whose recovery fails is tried again after a backoff, doubling from the base
# up to the max, and after this many failed attempts it is compensated and flagged.
recover_backoff_s_base = 5
recover_backoff_s_max = 300
recover_attempts_max = 8
# GET /wallet/flows/flagged: flows listed per call.
flagged_list_max = 500
# A callback's timestamp may differ from our clock by this much at most (a replay of a captured
# callback is refused after it).
callback_age_s_max = 300
# The simulated provider delivers a callback up to this many times, this far apart, while the
# operation has not recorded its transaction yet (409 callback_too_early).
simulated_delivery_attempts_max = 20
simulated_redelivery_s = 0.05
