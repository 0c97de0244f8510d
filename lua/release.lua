--[[ release: void a pending hold; locked goes down by its amount, total is unchanged.

KEYS[1..8]       as reserve.lua (acct, holds, expiry, ended, ops, stream, seq, index?)

ARGV[1..3]       now_ms, id_base, id_step
ARGV[4] label
ARGV[5] reference_id
ARGV[6] meta           JSON text or ""
ARGV[7] retention_ms
ARGV[8] expire_max
ARGV[9] prune_max

A key of the wrong type, a non-integer counter or balance: an error reply, nothing written.

Returns hold_reply {code, total, locked, event_id, hold fields...}
  0 ok                    released now (or found past its TTL and expired now: state says which)
  1 ok_existing           already released or expired: nothing changed
  11 account_not_found
  12 hold_not_found
  31 hold_already_committed
  40 ledger_not_loaded    the shard's event counter is missing (Redis lost its data):
                          nothing written
]]
-- @include common
-- @include holds

local keys = { acct = KEYS[1], holds = KEYS[2], expiry = KEYS[3], ended = KEYS[4], ops = KEYS[5],
               stream = KEYS[6], seq = KEYS[7] }
local bad = check_account_keys(keys, KEYS[8])
if bad then
  return checked_reply(bad, { 40, 0, 0, 0 })
end
return hold_release(keys, ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]),
  tonumber(ARGV[9]), KEYS[8])
