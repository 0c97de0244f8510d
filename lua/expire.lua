--[[ expire: the sweeper's pass over one account: end holds past their TTL, prune old records.

KEYS[1..8]       as reserve.lua (acct, holds, expiry, ended, ops, stream, seq, index?)

ARGV[1..3]       now_ms, id_base, id_step
ARGV[4] label
ARGV[5] retention_ms
ARGV[6] expire_max
ARGV[7] prune_max

A key of the wrong type, a non-integer counter or balance: an error reply, nothing written.

Returns {code, expired_count, pruned_count, next_expiry_ms}  (next_expiry_ms 0: none pending)
  0 ok
  11 account_not_found
  40 ledger_not_loaded    the shard's event counter is missing (Redis lost its data): nothing written
]]
-- @include common

local keys = { acct = KEYS[1], holds = KEYS[2], expiry = KEYS[3], ended = KEYS[4], ops = KEYS[5],
               stream = KEYS[6], seq = KEYS[7] }
local bad = check_account_keys(keys, KEYS[8])
if bad then
  return checked_reply(bad, { 40, 0, 0, 0 })
end

if rcall('EXISTS', keys.acct) == 0 then
  return { 11, 0, 0, 0 }
end
local expired = expire_due(keys, ARGV[4], tonumber(ARGV[6]))
local pruned = prune_ended(keys, tonumber(ARGV[5]), tonumber(ARGV[7]), KEYS[8])
local nxt = rcall('ZRANGE', keys.expiry, 0, 0, 'WITHSCORES')
local next_ms = 0
if nxt[2] then
  next_ms = tonumber(nxt[2])
end
return { 0, expired, pruned, next_ms }
