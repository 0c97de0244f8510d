-- Top-up and withdrawal share their bookkeeping: one record per reference in the ops hash,
--   kind|amount_minor|event_id|total_after|ts_ms
-- so that a repeat gets the first answer and never moves money twice.

local function op_lookup(keys, ref, kind, amount)
  local raw = rcall('HGET', keys.ops, ref)
  if not raw then
    return nil
  end
  local k, a, id = string.match(raw, '^(%a+)|(%d+)|(%d+)|')
  -- a repeat answers with the first event id and the balances as they are now
  local total, locked = balances(keys.acct)
  if k ~= kind or tonumber(a) ~= amount then
    return { 20, total, locked, tonumber(id) }
  end
  return { 1, total, locked, tonumber(id) }
end

local function op_apply(keys, label, ref, kind, op, amount, d_total, meta)
  local id, total, locked = apply(keys.acct, keys.stream, keys.seq, op, label, ref, amount, d_total, 0,
    meta)
  rcall('HSET', keys.ops, ref, kind .. '|' .. istr(amount) .. '|' .. istr(id) .. '|' .. istr(total)
    .. '|' .. ARGV[1])
  rcall('ZADD', keys.ended, ARGV[1], 'o:' .. ref)
  return { 0, total, locked, id }
end
