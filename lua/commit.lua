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

local keys = { acct = KEYS[1], holds = KEYS[2], expiry = KEYS[3], ended = KEYS[4], ops = KEYS[5],
               stream = KEYS[6], seq = KEYS[7] }
local label, ref = ARGV[4], ARGV[5]

-- validate
local amount = nil
if ARGV[6] ~= '' then
  amount = parse_amount(ARGV[6])
  if amount == nil then
    return hold_reply(10)
  end
end
if rcall('EXISTS', keys.acct) == 0 then
  return hold_reply(11)
end
local raw = rcall('HGET', keys.holds, ref)
if not raw then
  return hold_reply(12)
end
local h = hold_decode(raw)

-- already ended
if h.state ~= 'pending' then
  local total, locked = balances(keys.acct)
  if h.state == 'committed' then
    if amount == nil or amount == h.committed then
      return hold_reply(1, total, locked, 0, h)
    end
    return hold_reply(31, total, locked, 0, h)
  elseif h.state == 'released' then
    return hold_reply(30, total, locked, 0, h)
  end
  return hold_reply(32, total, locked, 0, h)
end
if h.expires > 0 and h.expires <= NOW_MS then
  local _, total, locked = end_hold(keys, label, ref, h, 'expired', '')
  return hold_reply(32, total, locked, 0, h)
end

-- limits
local committed = amount or h.amount
if committed > h.amount then
  local total, locked = balances(keys.acct)
  return hold_reply(22, total, locked, 0, h)
end

-- mutate
h.state = 'committed'
h.committed = committed
h.ended = NOW_MS
rcall('HSET', keys.holds, ref, hold_encode(h))
rcall('ZREM', keys.expiry, ref)
rcall('ZADD', keys.ended, ARGV[1], 'h:' .. ref)
local id, total, locked = apply(keys.acct, keys.stream, keys.seq, 'reserve_commit', label, ref,
  committed, -committed, -h.amount, ARGV[7], { 'held', istr(h.amount) })
expire_due(keys, label, tonumber(ARGV[9]))
prune_ended(keys, tonumber(ARGV[8]), tonumber(ARGV[10]), KEYS[8])
return hold_reply(0, total, locked, id, h)
