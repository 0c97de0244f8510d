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
--
-- Redis stores amounts as integer strings; replies carry them as integers (all below 2^53).
local rcall = redis.call

local AMOUNT_MAX = 9007199254740991 -- 2^53 - 1: above it Lua doubles stop being exact
local NOW_MS = tonumber(ARGV[1])
-- tonumber costs about what a redis.call does: each of these once per call, not per event
local ID_BASE, ID_STEP = tonumber(ARGV[2]), tonumber(ARGV[3])

local format = string.format
local NOW_TEXT = format('%d', NOW_MS)

-- Integer to the digits Redis stores. string.format costs about as much as a redis.call, so the
-- two values most written (0 and the call's clock) skip it.
local function istr(n)
  if n == 0 then
    return '0'
  elseif n == NOW_MS then
    return NOW_TEXT
  end
  return format('%d', n)
end

-- A positive integer of minor units, at most 2^53 - 1, given as digits only; else nil. Also
-- its text, to write where the amount is written (an operation writes it three or four times):
-- the caller's own digits when they are the canonical ones (no leading zero).
local function parse_amount(raw)
  if type(raw) ~= 'string' or not string.match(raw, '^%d+$') or #raw > 16 then
    return nil
  end
  local n = tonumber(raw)
  if n == nil or n <= 0 or n > AMOUNT_MAX then
    return nil
  end
  if string.byte(raw, 1) == 48 then -- '0...'
    return n, istr(n)
  end
  return n, raw
end

-- A hold record's fields; amount_text keeps the record's own digits of the amount.
local function hold_decode(raw)
  local s, a, c, cr, ex, en, op = string.match(raw, '^(%a+)|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)|(.*)$')
  return { state = s, amount = tonumber(a), amount_text = a, committed = tonumber(c),
           created = tonumber(cr), expires = tonumber(ex), ended = tonumber(en), op = op }
end

-- The digits of a change d of an account's balance, reusing those of the amount moved.
local function delta_text(d, amount, amount_text)
  if d == 0 then
    return '0'
  elseif d == amount then
    return amount_text
  elseif d == -amount then
    return '-' .. amount_text
  end
  return istr(d)
end

local function hold_encode(h)
  return h.state .. '|' .. (h.amount_text or istr(h.amount)) .. '|' .. istr(h.committed)
    .. '|' .. istr(h.created) .. '|' .. istr(h.expires) .. '|' .. istr(h.ended) .. '|' .. h.op
end

-- Amounts, ids and times go back as integer replies (every one is an integer below 2^53, so
-- exact): cheaper than formatting them here and parsing them in the client.
local function hold_reply(code, total, locked, event_id, h)
  if h == nil then
    return { code, total or 0, locked or 0, event_id or 0 }
  end
  return { code, total or 0, locked or 0, event_id or 0, h.state, h.amount, h.committed,
           h.created, h.expires, h.ended, h.op }
end

-- The balances of each account read in this call: every change to them goes through apply,
-- which keeps this up to date, so an account is read from Redis once per call (hold_batch runs
-- many operations on one account in one call).
local known_balances = {}

local function balances(acct_key)
  local known = known_balances[acct_key]
  if known then
    return known[1], known[2]
  end
  local v = rcall('HMGET', acct_key, 'total', 'locked')
  local total, locked = tonumber(v[1]), tonumber(v[2])
  if total ~= nil then
    known_balances[acct_key] = { total, locked }
  end
  return total, locked
end

-- Checks before a script's first write (a script cannot roll back, so nothing may raise after
-- it): each key it will touch is of its type or missing, the shard's event counter exists
-- (else the shard's data is not loaded: code 40) and is an integer, and each account's total
-- and locked are integers. Once per distinct key per call. Returns nil, or the code 40, or an
-- error text for redis.error_reply. Fills known_balances, which the operations then use.
local checked_keys = {}
local checked_seqs = {} -- seq_key -> its value when checked (a deferring call starts from it)

local function check_type(key, want)
  if checked_keys[key] then
    return nil
  end
  local t = rcall('TYPE', key)
  t = t.ok or t
  if t ~= want and t ~= 'none' then
    return 'malformed key ' .. key .. ': ' .. t .. ' where a ' .. want .. ' belongs'
  end
  checked_keys[key] = t
  return nil
end

-- The shard's event counter: missing = Redis lost (or never loaded) this shard's data. (GET
-- and HMGET below answer WRONGTYPE themselves, before any write: no TYPE call needed.)
local function check_seq(seq_key)
  if checked_keys[seq_key] then
    return nil
  end
  local v = rcall('GET', seq_key)
  if not v then
    return 40
  end
  if not string.match(v, '^%d+$') or #v > 16 or tonumber(v) > AMOUNT_MAX then
    return 'malformed key ' .. seq_key .. ': not an event counter'
  end
  checked_seqs[seq_key] = tonumber(v)
  checked_keys[seq_key] = 'string'
  return nil
end

-- An account's hash and its balances (read here once, kept in known_balances).
local function check_account(acct_key)
  if checked_keys[acct_key] then
    return nil
  end
  local v = rcall('HMGET', acct_key, 'total', 'locked')
  if not v[1] and not v[2] and rcall('EXISTS', acct_key) == 0 then
    checked_keys[acct_key] = 'none' -- no such account: the operations answer 11
    return nil
  end
  if not (v[1] and v[2] and string.match(v[1], '^%d+$') and string.match(v[2], '^%d+$')) then
    return 'malformed key ' .. acct_key .. ': total and locked must be integers'
  end
  known_balances[acct_key] = { tonumber(v[1]), tonumber(v[2]) }
  checked_keys[acct_key] = 'hash'
  return nil
end

-- keys: { acct, holds, expiry, ended, ops, stream, seq } of a per-account script; index: the
-- reference index or nil.
local function check_account_keys(keys, index)
  return check_seq(keys.seq) or check_type(keys.stream, 'stream') or check_account(keys.acct)
    or check_type(keys.holds, 'hash') or check_type(keys.expiry, 'zset')
    or check_type(keys.ended, 'zset') or check_type(keys.ops, 'hash')
    or (index and check_type(index, 'hash')) or nil
end

-- A check's answer as the script's reply: code 40 in the script's own reply shape (empty rest).
local function checked_reply(bad, code40_reply)
  if bad == 40 then
    return code40_reply
  end
  return redis.error_reply(bad)
end

-- A call that runs many operations (hold_batch) defers the balance writes and the event counter
-- to its end: one HSET per account and one SET per counter instead of one each per operation.
-- Nothing else reads them in between (balances() and the counters below serve the call), and
-- a script is atomic, so no client sees the difference. Off: every apply writes through.
local deferred_accounts = nil -- acct_key -> true while deferring
local deferred_seqs = {} -- seq_key -> the last event counter value handed out
local deferred_ended = {} -- ended set key -> { NOW_TEXT, member, NOW_TEXT, member, ... }

local function defer_writes()
  deferred_accounts = {}
end

local function flush_writes()
  for acct_key in pairs(deferred_accounts) do
    local b = known_balances[acct_key]
    rcall('HSET', acct_key, 'total', istr(b[1]), 'locked', istr(b[2]))
  end
  for seq_key, seq in pairs(deferred_seqs) do
    rcall('SET', seq_key, istr(seq))
  end
  for ended_key, args in pairs(deferred_ended) do
    rcall('ZADD', ended_key, unpack(args))
  end
  deferred_accounts, deferred_seqs, deferred_ended = nil, {}, {}
end

-- Moves the account's balances by (d_total, d_locked) and appends the journal event in the same
-- step. Returns event id (unique across shards), total and locked after. amount_text: the
-- digits of amount when the caller has them (else made here); a change of +-amount reuses them.
-- ...: the operation's own fields, name, value, ... (journal.py), at the end of the event.
local function apply(acct_key, stream_key, seq_key, op, label, ref, amount, d_total, d_locked, meta,
                     amount_text, ...)
  local total, locked = balances(acct_key)
  total, locked = total + d_total, locked + d_locked
  local seq
  if deferred_accounts then
    if d_total ~= 0 or d_locked ~= 0 then
      deferred_accounts[acct_key] = true
    end
    seq = deferred_seqs[seq_key] or checked_seqs[seq_key]
    if seq == nil then
      seq = tonumber(rcall('GET', seq_key) or '0')
    end
    seq = seq + 1
    deferred_seqs[seq_key] = seq
  else
    if d_total ~= 0 and d_locked ~= 0 then
      rcall('HSET', acct_key, 'total', istr(total), 'locked', istr(locked))
    elseif d_total ~= 0 then
      rcall('HSET', acct_key, 'total', istr(total))
    elseif d_locked ~= 0 then
      rcall('HSET', acct_key, 'locked', istr(locked))
    end
    seq = rcall('INCR', seq_key)
  end
  local known = known_balances[acct_key]
  if known then
    known[1], known[2] = total, locked
  else
    known_balances[acct_key] = { total, locked }
  end
  local id = (seq - 1) * ID_STEP + ID_BASE
  amount_text = amount_text or istr(amount)
  rcall('XADD', stream_key, '*', 'id', istr(id), 'op', op, 'acct', label, 'ref', ref,
    'amt', amount_text, 'dt', delta_text(d_total, amount, amount_text),
    'dl', delta_text(d_locked, amount, amount_text), 'total', istr(total), 'locked', istr(locked),
    'ts', ARGV[1], 'meta', meta, ...)
  return id, total, locked
end

-- Stores a hold that has just ended (h.state and h.ended set): off the expiry set, onto the
-- ended set that pruning reads.
local function store_ended_hold(keys, ref, h)
  rcall('HSET', keys.holds, ref, hold_encode(h))
  if h.expires > 0 then -- only a hold with a TTL is in the expiry set
    rcall('ZREM', keys.expiry, ref)
  end
  if deferred_accounts then -- with the balances: pruning reads this set only in another call
    local args = deferred_ended[keys.ended]
    if args == nil then
      args = {}
      deferred_ended[keys.ended] = args
    end
    args[#args + 1] = NOW_TEXT
    args[#args + 1] = 'h:' .. ref
  else
    rcall('ZADD', keys.ended, NOW_TEXT, 'h:' .. ref)
  end
end

-- Ends a pending hold (released or expired): frees its amount and records the end.
local function end_hold(keys, label, ref, h, state, meta)
  local op = 'reserve_release'
  if state == 'expired' then
    op = 'reserve_expire'
  end
  h.state = state
  h.ended = NOW_MS
  store_ended_hold(keys, ref, h)
  return apply(keys.acct, keys.stream, keys.seq, op, label, ref, h.amount, 0, -h.amount, meta,
    h.amount_text)
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
