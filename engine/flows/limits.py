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
