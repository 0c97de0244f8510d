--[[ withdraw: remove funds from an account, only from its available balance (idempotent).

KEYS[1..8]       as reserve.lua (acct, holds, expiry, ended, ops, stream, seq, index?)

ARGV[1..3]       now_ms, id_base, id_step
ARGV[4] label
ARGV[5] reference       the destination reference
ARGV[6] amount_minor    positive integer <= 2^53 - 1
ARGV[7] meta            JSON text or ""
ARGV[8] retention_ms
ARGV[9] expire_max
ARGV[10] prune_max

A key of the wrong type, a non-integer counter or balance: an error reply, nothing written.

Returns {code, total, locked, event_id}
  0 ok                  removed now
  1 ok_existing         this reference was already applied with this amount: the first answer
  10 invalid_amount
  11 account_not_found
  20 reference_conflict the reference was used with another amount or for a top-up
  21 exceeds_available  nothing removed
  40 ledger_not_loaded  the shard's event counter is missing (Redis lost its data):
                        nothing written
]]
-- @include common
-- @include transfer

local keys = { acct = KEYS[1], holds = KEYS[2], expiry = KEYS[3], ended = KEYS[4], ops = KEYS[5],
               stream = KEYS[6], seq = KEYS[7] }
local label, ref = ARGV[4], ARGV[5]
local bad = check_account_keys(keys, KEYS[8])
if bad then
  return checked_reply(bad, { 40, 0, 0, 0 })
end

-- validate
local amount = parse_amount(ARGV[6])
if amount == nil then
  return { 10, 0, 0, 0 }
end
if rcall('EXISTS', keys.acct) == 0 then
  return { 11, 0, 0, 0 }
end
expire_due(keys, label, tonumber(ARGV[9]))
prune_ended(keys, tonumber(ARGV[8]), tonumber(ARGV[10]), KEYS[8])

-- already exists / idempotent
local seen = op_lookup(keys, ref, 'withdraw', amount)
if seen then
  return seen
end

-- limits
local total, locked = balances(keys.acct)
if amount > total - locked then
  return { 21, total, locked, 0 }
end

-- mutate
return op_apply(keys, label, ref, 'withdraw', 'reserve_withdrawal', amount, -amount, ARGV[7])
