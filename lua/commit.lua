--[[ commit: the operation completed and the money left the reserve.

Total and locked go down by the committed amount; a partial commit frees the rest of the hold.

KEYS[1..8]       as reserve.lua (acct, holds, expiry, ended, ops, stream, seq, index?)

ARGV[1..3]       now_ms, id_base, id_step
ARGV[4] label
ARGV[5] reference_id
ARGV[6] amount_minor   "" = the whole hold; else positive integer <= the held amount
ARGV[7] meta           JSON text or ""
ARGV[8] retention_ms
ARGV[9] expire_max
ARGV[10] prune_max

Returns hold_reply {code, total, locked, event_id, hold fields...}
  0 ok                     committed now
  1 ok_existing            already committed with this amount: nothing changed
  10 invalid_amount
  11 account_not_found
  12 hold_not_found
  22 exceeds_hold          more than was held: nothing changed
  30 hold_already_released
  31 hold_already_committed  with a different amount
  32 hold_expired          (a pending hold past its TTL is expired now, then refused)
]]
-- @include common
-- @include holds

local keys = { acct = KEYS[1], holds = KEYS[2], expiry = KEYS[3], ended = KEYS[4], ops = KEYS[5],
               stream = KEYS[6], seq = KEYS[7] }
return hold_commit(keys, ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]),
  tonumber(ARGV[10]), KEYS[8])
