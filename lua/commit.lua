--[[ commit: the operation completed and the money left the reserve.

Total and locked go down by the committed amount; a partial commit frees the rest of the hold.

KEYS[1..8]       as reserve.lua (acct, holds, expiry, ended, ops, stream, seq, index?)

ARGV[1..3]       now_ms, id_base, id_step
ARGV[4] label
ARGV[5] reference_id
ARGV[6] amount_minor   "" = the whole hold; else positive integer <= the held amount
ARGV[7] meta           JSON text or ""
ARGV[8] currency       with an amount: the currency it was converted with (the account's must
                       be it, else 41); "" = no check
ARGV[9] retention_ms
ARGV[10] expire_max
ARGV[11] prune_max

A key of the wrong type, a non-integer counter or balance: an error reply, nothing written.

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
  40 ledger_not_loaded     the shard's event counter is missing (Redis lost its data)
  41 currency_mismatch     the account is not in ARGV[8]'s currency: nothing written
]]
-- @include common
-- @include holds

local keys = { acct = KEYS[1], holds = KEYS[2], expiry = KEYS[3], ended = KEYS[4], ops = KEYS[5],
               stream = KEYS[6], seq = KEYS[7] }
local bad = check_account_keys(keys, KEYS[8])
if bad then
  return checked_reply(bad, { 40, 0, 0, 0 })
end
return hold_commit(keys, ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[9]), tonumber(ARGV[10]),
  tonumber(ARGV[11]), KEYS[8], ARGV[8])
