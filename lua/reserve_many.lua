--[[ reserve_many: lock several legs all-or-nothing (a swap's two reserves, a user's funds).

Used when every key shares one slot; across slots the engine runs a saga of reserve.lua calls.

KEYS[5i-4..5i]   leg i's account keys: acct, holds, expiry, ended, ops   (i = 1..n, n <= 4)
KEYS[5n+1]       stream
KEYS[5n+2]       seq
KEYS[5n+3]       index (optional, as reserve.lua)

ARGV[1..3]       now_ms, id_base, id_step
ARGV[4] n        number of legs
ARGV[3i+2..3i+4] leg i: label, reference_id, amount_minor
ARGV[3n+5] ttl_ms        0 = no expiry
ARGV[3n+6] operation_type
ARGV[3n+7] meta
ARGV[3n+8] retention_ms
ARGV[3n+9] expire_max
ARGV[3n+10] prune_max

Returns {code, leg, ...}: on 0 / 1 {code, 0, then per leg: total, locked, event_id};
otherwise {code, failing leg (1-based), total, locked} and nothing locked.
  0 ok                  every leg locked now
  1 ok_existing         every leg already held with these amounts: nothing locked
  10 invalid_amount
  11 account_not_found
  20 reference_conflict a leg's reference is held with another amount, account or operation
                        type, or only some are
  21 exceeds_available
  40 ledger_not_loaded  the shard's event counter is missing (Redis lost its data)
A key of the wrong type, a non-integer counter or balance: an error reply, nothing written.
]]
-- @include common

local n = tonumber(ARGV[4])
local base = 3 * n + 5
local stream, seq, index = KEYS[5 * n + 1], KEYS[5 * n + 2], KEYS[5 * n + 3]
local ttl_ms, optype, meta = tonumber(ARGV[base]), ARGV[base + 1], ARGV[base + 2]

local legs = {}
for i = 1, n do
  local k = 5 * (i - 1)
  local a = 3 * i + 2
  legs[i] = { keys = { acct = KEYS[k + 1], holds = KEYS[k + 2], expiry = KEYS[k + 3], ended = KEYS[k + 4],
                       ops = KEYS[k + 5], stream = stream, seq = seq },
              label = ARGV[a], ref = ARGV[a + 1], amount = parse_amount(ARGV[a + 2]) }
end

-- every key, once each, before the first write
local bad = nil
for i = 1, n do
  bad = bad or check_account_keys(legs[i].keys, index)
end
if bad then
  return checked_reply(bad, { 40, 0, 0, 0 })
end

-- validate
for i = 1, n do
  if legs[i].amount == nil then
    return { 10, i, 0, 0 }
  end
  if rcall('EXISTS', legs[i].keys.acct) == 0 then
    return { 11, i, 0, 0 }
  end
end
for i = 1, n do
  expire_due(legs[i].keys, legs[i].label, tonumber(ARGV[base + 4]))
  prune_ended(legs[i].keys, tonumber(ARGV[base + 3]), tonumber(ARGV[base + 5]), index)
end

-- already exists / idempotent: all legs held as asked, or none
local held = 0
for i = 1, n do
  local raw = rcall('HGET', legs[i].keys.holds, legs[i].ref)
  if raw then
    local h = hold_decode(raw)
    if h.amount ~= legs[i].amount or h.op ~= optype then
      return { 20, i, 0, 0 }
    end
    held = held + 1
  elseif index then
    local owner = rcall('HGET', index, legs[i].ref)
    if owner and owner ~= legs[i].label then
      return { 20, i, 0, 0 }
    end
  end
end
if held == n then
  local reply = { 1, 0 }
  for i = 1, n do
    local total, locked = balances(legs[i].keys.acct)
    reply[#reply + 1] = total
    reply[#reply + 1] = locked
    reply[#reply + 1] = 0
  end
  return reply
elseif held > 0 then
  return { 20, 0, 0, 0 }
end

-- limits: legs on one account add up
local wanted = {}
for i = 1, n do
  local acct = legs[i].keys.acct
  wanted[acct] = (wanted[acct] or 0) + legs[i].amount
  local total, locked = balances(acct)
  if wanted[acct] > total - locked then
    return { 21, i, total, locked }
  end
end

-- mutate
local expires = 0
if ttl_ms > 0 then
  expires = NOW_MS + ttl_ms
end
local reply = { 0, 0 }
for i = 1, n do
  local leg = legs[i]
  local h = { state = 'pending', amount = leg.amount, committed = 0, created = NOW_MS, expires = expires,
              ended = 0, op = optype }
  rcall('HSET', leg.keys.holds, leg.ref, hold_encode(h))
  if expires > 0 then
    rcall('ZADD', leg.keys.expiry, istr(expires), leg.ref)
  end
  if index then
    rcall('HSET', index, leg.ref, leg.label)
  end
  local id, total, locked = apply(leg.keys.acct, stream, seq, 'reserve_lock', leg.label, leg.ref,
    leg.amount, 0, leg.amount, meta, nil, 'exp', istr(expires), 'optype', optype)
  reply[#reply + 1] = total
  reply[#reply + 1] = locked
  reply[#reply + 1] = id
end
return reply
