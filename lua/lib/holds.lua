-- The hold operations (reserve, commit, release), shared by their one-operation scripts and the
-- batch script (hold_batch.lua), so that one copy of the logic serves both. Needs common.lua.
--
-- keys:  { acct, holds, expiry, ended, ops, stream, seq } of the account (as reserve.lua)
-- index: the reference index key when it shares the slot, else nil (claimed by the caller)
-- Each returns a hold_reply table; nothing is written before every check passed.

-- Within one script call the clock does not move, accounts are not deleted, and no operation
-- makes a hold due (a TTL is at least 1 s) or an ended record prunable (retention > 0): so once
-- an account is known to exist, or its expiry or pruning pass came back short of its bound,
-- asking again in the same call would find the same. hold_batch runs many operations per call
-- and skips those repeats; a one-operation script never has any.
local known_accounts, expiry_done, prune_done = {}, {}, {}

local function account_exists(acct)
  if known_accounts[acct] then
    return true
  end
  if rcall('EXISTS', acct) == 0 then
    return false
  end
  known_accounts[acct] = true
  return true
end

-- The hold under ref on an existing account; or nil and the code to answer (11 no account,
-- 12 no such hold). Commit and release start alike.
local function find_hold(keys, ref)
  if not account_exists(keys.acct) then
    return nil, 11
  end
  local raw = rcall('HGET', keys.holds, ref)
  if not raw then
    return nil, 12
  end
  return hold_decode(raw)
end

local function expire_pass(keys, label, max_count)
  if expiry_done[keys.acct] then
    return
  end
  if expire_due(keys, label, max_count) < max_count then
    expiry_done[keys.acct] = true
  end
end

local function prune_pass(keys, retention_ms, max_count, index)
  if prune_done[keys.acct] then
    return
  end
  if prune_ended(keys, retention_ms, max_count, index) < max_count and retention_ms > 0 then
    prune_done[keys.acct] = true
  end
end

local function hold_reserve(keys, label, ref, amount_raw, ttl_ms, optype, meta, retention_ms,
                            expire_max, prune_max, index)
  -- validate
  local amount, amount_text = parse_amount(amount_raw)
  if amount == nil then
    return hold_reply(10)
  end
  if not account_exists(keys.acct) then
    return hold_reply(11)
  end
  expire_pass(keys, label, expire_max)
  prune_pass(keys, retention_ms, prune_max, index)

  -- already exists / idempotent. A hold and its index entry are written together and pruned
  -- together (or the hold alone), so with the index in this slot a reference the index does not
  -- name to this account has no hold here: a new reference costs one lookup, not two.
  local owner = nil
  if index then
    owner = rcall('HGET', index, ref)
    if owner and owner ~= label then
      return hold_reply(20)
    end
  end
  if owner or not index then
    local raw = rcall('HGET', keys.holds, ref)
    if raw then
      local h = hold_decode(raw)
      local total, locked = balances(keys.acct)
      if h.amount ~= amount or h.op ~= optype then  -- a repeat only if every field matches
        return hold_reply(20, total, locked, 0, h)
      end
      return hold_reply(1, total, locked, 0, h)
    end
  end

  -- limits
  local total, locked = balances(keys.acct)
  if amount > total - locked then
    return hold_reply(21, total, locked)
  end

  -- mutate
  local expires = 0
  if ttl_ms > 0 then
    expires = NOW_MS + ttl_ms
    rcall('ZADD', keys.expiry, istr(expires), ref)
  end
  local h = { state = 'pending', amount = amount, amount_text = amount_text, committed = 0,
              created = NOW_MS, expires = expires, ended = 0, op = optype }
  rcall('HSET', keys.holds, ref, hold_encode(h))
  if index then
    rcall('HSET', index, ref, label)
  end
  local id
  id, total, locked = apply(keys.acct, keys.stream, keys.seq, 'reserve_lock', label, ref, amount, 0,
    amount, meta, amount_text, 'exp', istr(expires), 'optype', optype)
  return hold_reply(0, total, locked, id, h)
end

-- amount_raw "" commits the whole hold. currency: with an amount, the currency it was converted
-- with; the account must be in it (41), as a process's cache of reference -> account may be
-- stale ("" = no check).
local function hold_commit(keys, label, ref, amount_raw, meta, retention_ms, expire_max, prune_max,
                           index, currency)
  -- validate
  local amount, amount_text = nil, nil
  if amount_raw ~= '' then
    amount, amount_text = parse_amount(amount_raw)
    if amount == nil then
      return hold_reply(10)
    end
  end
  local h, missing = find_hold(keys, ref)
  if not h then
    return hold_reply(missing)
  end
  if amount and currency and currency ~= '' and rcall('HGET', keys.acct, 'currency') ~= currency then
    return hold_reply(41)
  end

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
  store_ended_hold(keys, ref, h)
  local id, total, locked = apply(keys.acct, keys.stream, keys.seq, 'reserve_commit', label, ref,
    committed, -committed, -h.amount, meta, amount_text or h.amount_text, 'held', h.amount_text)
  expire_pass(keys, label, expire_max)
  prune_pass(keys, retention_ms, prune_max, index)
  return hold_reply(0, total, locked, id, h)
end

local function hold_release(keys, label, ref, meta, retention_ms, expire_max, prune_max, index)
  -- validate
  local h, missing = find_hold(keys, ref)
  if not h then
    return hold_reply(missing)
  end

  -- already ended
  if h.state ~= 'pending' then
    local total, locked = balances(keys.acct)
    if h.state == 'committed' then
      return hold_reply(31, total, locked, 0, h)
    end
    return hold_reply(1, total, locked, 0, h)
  end

  -- mutate
  local state = 'released'
  if h.expires > 0 and h.expires <= NOW_MS then
    state = 'expired'
  end
  local id, total, locked = end_hold(keys, label, ref, h, state, meta)
  expire_pass(keys, label, expire_max)
  prune_pass(keys, retention_ms, prune_max, index)
  return hold_reply(0, total, locked, id, h)
end
