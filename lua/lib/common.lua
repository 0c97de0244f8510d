-- Shared helpers, included by the command scripts (see engine/scripts.py).
--
-- Every command script's ARGV starts with the same three values:
--   ARGV[1] now_ms      the caller's clock, integer milliseconds since the epoch
--   ARGV[2] id_base     shard index + 1 (event ids are unique across shards)
--   ARGV[3] id_step     shard count
--
-- Hold record (one field per reference in the account's holds hash):
--   state|amount_minor|committed_minor|created_ms|expires_ms|ended_ms|operation_type
--   state: pending, committed, released, expired; expires_ms 0 = no TTL.
local rcall = redis.call

local AMOUNT_MAX = 9007199254740991 -- 2^53 - 1: above it Lua doubles stop being exact
local NOW_MS = tonumber(ARGV[1])

local function istr(n)
  return string.format('%d', n)
end

-- A positive integer of minor units, at most 2^53 - 1, given as digits only; else nil.
local function parse_amount(raw)
  if type(raw) ~= 'string' or not string.match(raw, '^%d+$') or #raw > 16 then
    return nil
  end
  local n = tonumber(raw)
  if n == nil or n <= 0 or n > AMOUNT_MAX then
    return nil
  end
  return n
end

local function hold_decode(raw)
  local s, a, c, cr, ex, en, op = string.match(raw, '^(%a+)|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)|(.*)$')
  return { state = s, amount = tonumber(a), committed = tonumber(c), created = tonumber(cr),
           expires = tonumber(ex), ended = tonumber(en), op = op }
end

local function hold_encode(h)
  return h.state .. '|' .. istr(h.amount) .. '|' .. istr(h.committed) .. '|' .. istr(h.created)
    .. '|' .. istr(h.expires) .. '|' .. istr(h.ended) .. '|' .. h.op
end

local function hold_reply(code, total, locked, event_id, h)
  if h == nil then
    return { code, istr(total or 0), istr(locked or 0), istr(event_id or 0) }
  end
  return { code, istr(total or 0), istr(locked or 0), istr(event_id or 0), h.state, istr(h.amount),
           istr(h.committed), istr(h.created), istr(h.expires), istr(h.ended), h.op }
end

local function balances(acct_key)
  local v = rcall('HMGET', acct_key, 'total', 'locked')
  return tonumber(v[1]), tonumber(v[2])
end

-- Moves the account's balances by (d_total, d_locked) and appends the journal event in the same
-- step. Returns event id (unique across shards), total and locked after.
local function apply(acct_key, stream_key, seq_key, op, label, ref, amount, d_total, d_locked, meta, extra)
  local total, locked
  if d_total ~= 0 then
    total = rcall('HINCRBY', acct_key, 'total', istr(d_total))
  end
  if d_locked ~= 0 then
    locked = rcall('HINCRBY', acct_key, 'locked', istr(d_locked))
  end
  if total == nil or locked == nil then
    local t, l = balances(acct_key)
    total = total or t
    locked = locked or l
  end
  local seq = rcall('INCR', seq_key)
  local id = (seq - 1) * tonumber(ARGV[3]) + tonumber(ARGV[2])
  local fields = { 'id', istr(id), 'op', op, 'acct', label, 'ref', ref, 'amt', istr(amount),
                   'dt', istr(d_total), 'dl', istr(d_locked), 'total', istr(total),
                   'locked', istr(locked), 'ts', ARGV[1], 'meta', meta }
  if extra then
    for i = 1, #extra do
      fields[#fields + 1] = extra[i]
    end
  end
  rcall('XADD', stream_key, '*', unpack(fields))
  return id, total, locked
end

-- Ends a pending hold (released or expired): frees its amount and records the end.
local function end_hold(keys, label, ref, h, state, meta)
  local op = 'reserve_release'
  if state == 'expired' then
    op = 'reserve_expire'
  end
  h.state = state
  h.ended = NOW_MS
  rcall('HSET', keys.holds, ref, hold_encode(h))
  rcall('ZREM', keys.expiry, ref)
  rcall('ZADD', keys.ended, istr(NOW_MS), 'h:' .. ref)
  return apply(keys.acct, keys.stream, keys.seq, op, label, ref, h.amount, 0, -h.amount, meta, nil)
end

-- Lazy expiry: ends up to max_count holds of this account whose TTL has passed.
local function expire_due(keys, label, max_count)
  local due = rcall('ZRANGEBYSCORE', keys.expiry, '-inf', ARGV[1], 'LIMIT', 0, max_count)
  for i = 1, #due do
    local raw = rcall('HGET', keys.holds, due[i])
    if raw then
      local h = hold_decode(raw)
      if h.state == 'pending' then
        end_hold(keys, label, due[i], h, 'expired', '')
      end
    end
    rcall('ZREM', keys.expiry, due[i])
  end
  return #due
end

-- Forgets ended holds and operation records older than the retention (bounded work per call).
local function prune_ended(keys, retention_ms, max_count, index_key)
  local cutoff = istr(NOW_MS - retention_ms)
  local old = rcall('ZRANGEBYSCORE', keys.ended, '-inf', cutoff, 'LIMIT', 0, max_count)
  for i = 1, #old do
    local kind, ref = string.sub(old[i], 1, 1), string.sub(old[i], 3)
    if kind == 'h' then
      rcall('HDEL', keys.holds, ref)
      if index_key then
        rcall('HDEL', index_key, ref)
      end
    else
      rcall('HDEL', keys.ops, ref)
    end
    rcall('ZREM', keys.ended, old[i])
  end
  return #old
end
