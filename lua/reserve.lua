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

Returns {code, total, locked, event_id, hold fields...} (hold_reply)
  0 ok                  locked now
  1 ok_existing         the same reference and amount: the hold as it stands, nothing locked
  10 invalid_amount
  11 account_not_found
  20 reference_conflict same reference with another amount or account
  21 exceeds_available  nothing locked; total and locked returned
]]
-- @include common

local keys = { acct = KEYS[1], holds = KEYS[2], expiry = KEYS[3], ended = KEYS[4], ops = KEYS[5],
               stream = KEYS[6], seq = KEYS[7] }
local label, ref = ARGV[4], ARGV[5]

-- validate
local amount = parse_amount(ARGV[6])
if amount == nil then
  return hold_reply(10)
end
if rcall('EXISTS', keys.acct) == 0 then
  return hold_reply(11)
end
expire_due(keys, label, tonumber(ARGV[11]))
prune_ended(keys, tonumber(ARGV[10]), tonumber(ARGV[12]), KEYS[8])

-- already exists / idempotent
local raw = rcall('HGET', keys.holds, ref)
if raw then
  local h = hold_decode(raw)
  local total, locked = balances(keys.acct)
  if h.amount ~= amount then
    return hold_reply(20, total, locked, 0, h)
  end
  return hold_reply(1, total, locked, 0, h)
end
if KEYS[8] then
  local owner = rcall('HGET', KEYS[8], ref)
  if owner and owner ~= label then
    return hold_reply(20)
  end
end

-- limits
local total, locked = balances(keys.acct)
if amount > total - locked then
  return hold_reply(21, total, locked)
end

-- mutate
local ttl_ms = tonumber(ARGV[7])
local expires = 0
if ttl_ms > 0 then
  expires = NOW_MS + ttl_ms
  rcall('ZADD', keys.expiry, istr(expires), ref)
end
local h = { state = 'pending', amount = amount, committed = 0, created = NOW_MS, expires = expires,
            ended = 0, op = ARGV[8] }
rcall('HSET', keys.holds, ref, hold_encode(h))
if KEYS[8] then
  rcall('HSET', KEYS[8], ref, label)
end
local id
id, total, locked = apply(keys.acct, keys.stream, keys.seq, 'reserve_lock', label, ref, amount, 0,
  amount, ARGV[9], { 'exp', istr(expires), 'optype', ARGV[8] })
return hold_reply(0, total, locked, id, h)
