--[[ reserve: check the available balance and lock an amount under a reference, in one step.

KEYS[1] acct     account hash (total, locked, ...)
KEYS[2] holds    hash: reference -> hold record (lib/common.lua)
KEYS[3] expiry   zset: pending reference -> expires_ms
KEYS[4] ended    zset: "h:<ref>" / "o:<ref>" -> ended_ms, for pruning after the retention
KEYS[5] ops      hash: top-up / withdrawal records (pruned here too)
KEYS[6] stream   the shard's journal stream
KEYS[7] seq      the shard's event counter
KEYS[8] index    optional: hash reference -> account label, when it shares the slot

ARGV[1..3]       now_ms, id_base, id_step
ARGV[4] label
ARGV[5] reference_id
ARGV[6] amount_minor   positive integer <= 2^53 - 1
ARGV[7] ttl_ms         0 = no expiry
ARGV[8] operation_type
ARGV[9] meta           JSON text or ""
ARGV[10] retention_ms  how long ended records are kept
ARGV[11] expire_max    lazy-expiry work per call
ARGV[12] prune_max     pruning work per call

A key of the wrong type, a non-integer counter or balance: an error reply, nothing written.

Returns {code, total, locked, event_id, hold fields...} (hold_reply)
  0 ok                  locked now
  1 ok_existing         the same reference, account, amount and operation type: the hold as it
                        stands, nothing locked
  10 invalid_amount
  11 account_not_found
  20 reference_conflict same reference with another amount, account or operation type
  21 exceeds_available  nothing locked; total and locked returned
  40 ledger_not_loaded  the shard's event counter is missing (Redis lost its data): nothing written
]]
-- @include common
-- @include holds

local keys = { acct = KEYS[1], holds = KEYS[2], expiry = KEYS[3], ended = KEYS[4], ops = KEYS[5],
               stream = KEYS[6], seq = KEYS[7] }
local bad = check_account_keys(keys, KEYS[8])
if bad then
  return checked_reply(bad, { 40, 0, 0, 0 })
end
return hold_reserve(keys, ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9],
  tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), KEYS[8])
