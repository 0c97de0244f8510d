"""Every bound the engine keeps, in one place, with its unit in the name."""

# Lua numbers are doubles: integers are exact only up to 2^53. Amounts and balances are
# refused above this before they reach a script, and scripts refuse a total that would pass it.
amount_minor_max = 2**53 - 1

reference_length_max = 128
operation_type_length_max = 64
metadata_bytes_max = 2048

# reserve_many: legs of one all-or-nothing reservation.
legs_count_max = 4

# Hold TTLs.
hold_ttl_s_min = 1
hold_ttl_s_max = 7 * 24 * 3600

# An ended hold (and a top-up / withdrawal record) is kept this long so that repeats of its
# reference get the same answer; after it, the reference may be used again.
retention_s_default = 24 * 3600

# Work one script call does on the side (lazy expiry, pruning ended records).
expire_per_call_max = 16
prune_per_call_max = 16

# The sweeper: accounts visited per pass, pause between passes.
sweep_interval_s = 1.0
sweep_per_account_max = 256

# In-process caches.
status_cache_ttl_s = 30.0

# reference -> account label, remembered in-process so release / commit skip the index lookup.
hold_label_cache_max = 100_000
# Accounts whose record and Redis keys are remembered in-process (oldest forgotten first).
account_cache_max = 100_000
# Operation types already checked (reserve skips the pattern for these).
operation_type_cache_max = 1024

# Sweeper rounds per account per pass (each round ends at most sweep_per_account_max holds).
sweep_rounds_max = 64

# Redis connections of one asyncio client; requests beyond wait up to redis_pool_wait_s.
redis_connections_max = 64
redis_pool_wait_s = 5.0
redis_connect_timeout_s = 2.0

# A cross-slot saga unsettled this long is taken as abandoned by a crashed caller and undone.
saga_stale_s = 60.0
saga_recover_per_pass_max = 256

# Micro-batching (engine/batching.py): operations of one shard per batch script call, batches of
# one shard in flight at once, operations waiting per shard before callers are refused.
batch_ops_max = 128
batches_inflight_per_shard_max = 2
batch_queue_ops_max = 10_000
