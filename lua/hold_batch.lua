--[[ hold_batch: reserve / commit / release operations of several callers on one shard, in one call.

Each operation runs exactly as its own script would (lib/holds.lua), one after the other, with
its own result and its own journal event; a refused one writes nothing and does not stop the
others. Every key shares the shard's hash tag, so one call is one Redis Cluster slot. The
accounts' balances and the event counter are written once, at the end (defer_writes in
lib/common.lua), instead of once per operation.

KEYS[1] stream       the shard's journal stream
KEYS[2] seq          the shard's event counter
KEYS[3] index        the shard's reference index (used by operations that ask for it)
KEYS[5j-1..5j+3]     account j's keys: acct, holds, expiry, ended, ops   (j = 1..m)

ARGV[1..3]       now_ms, id_base, id_step (one clock reading for the whole batch)
ARGV[4] retention_ms
ARGV[5] expire_max
ARGV[6] prune_max
ARGV[7] m        number of accounts
ARGV[7+j]        account j's label
ARGV[8+m] n      number of operations
then 8 values per operation i, from ARGV[9+m+8(i-1)]:
  kind             r reserve | c commit | x release
  account          j, the account's position above
  use_index        1: the index rides along (reserve.lua's KEYS[8]); 0: claimed by the caller
  reference_id
  amount_minor     reserve: the amount; commit: "" = the whole hold; release: ""
  ttl_ms           reserve: 0 = no expiry; else ""
  operation_type   reserve; commit: the currency of its amount (as commit.lua's ARGV[8]); else ""
  meta             JSON text or ""

Returns one reply per operation, in order, each what reserve.lua / commit.lua / release.lua
returns for it (hold_reply {code, total, locked, event_id, hold fields...}):
  0 ok
  1 ok_existing
  10 invalid_amount
  11 account_not_found
  12 hold_not_found
  20 reference_conflict
  21 exceeds_available
  22 exceeds_hold
  30 hold_already_released
  31 hold_already_committed
  32 hold_expired
  40 ledger_not_loaded  (every operation: the shard's event counter is missing)
  41 currency_mismatch
A key of the wrong type, a non-integer counter or balance: an error reply, nothing written.
]]
-- @include common
-- @include holds

local stream, seq, index = KEYS[1], KEYS[2], KEYS[3]
local retention_ms, expire_max, prune_max = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local m = tonumber(ARGV[7])
local accounts = {} -- by position as the operations give it, text ('1', '2', ...): no tonumber
for j = 1, m do
  local k = 5 * j - 1
  accounts[string.format('%d', j)] = {
    keys = { acct = KEYS[k], holds = KEYS[k + 1], expiry = KEYS[k + 2], ended = KEYS[k + 3],
             ops = KEYS[k + 4], stream = stream, seq = seq },
    label = ARGV[7 + j] }
end

local n = tonumber(ARGV[8 + m])
-- validate the batch's shape before any operation writes (a script cannot roll back)
local KINDS = { r = true, c = true, x = true }
for i = 1, n do
  local a = 9 + m + 8 * (i - 1)
  if not KINDS[ARGV[a]] or accounts[ARGV[a + 1]] == nil then
    return redis.error_reply('hold_batch: malformed operation ' .. i)
  end
end
-- every key the batch may touch, once each, before the first write
local bad = check_seq(seq) or check_type(stream, 'stream')
  or (index ~= seq and check_type(index, 'hash')) or nil
for j = 1, m do
  bad = bad or check_account_keys(accounts[string.format('%d', j)].keys, nil)
end
if bad == 40 then
  local replies = {}
  for i = 1, n do
    replies[i] = hold_reply(40)
  end
  return replies
elseif bad then
  return redis.error_reply(bad)
end

defer_writes()
local replies = {}
for i = 1, n do
  local a = 9 + m + 8 * (i - 1)
  local kind, account, ref = ARGV[a], accounts[ARGV[a + 1]], ARGV[a + 3]
  local idx = nil
  if ARGV[a + 2] == '1' then
    idx = index
  end
  if kind == 'r' then
    replies[i] = hold_reserve(account.keys, account.label, ref, ARGV[a + 4], tonumber(ARGV[a + 5]),
      ARGV[a + 6], ARGV[a + 7], retention_ms, expire_max, prune_max, idx)
  elseif kind == 'c' then
    replies[i] = hold_commit(account.keys, account.label, ref, ARGV[a + 4], ARGV[a + 7],
      retention_ms, expire_max, prune_max, idx, ARGV[a + 6])
  else -- 'x'
    replies[i] = hold_release(account.keys, account.label, ref, ARGV[a + 7], retention_ms,
      expire_max, prune_max, idx)
  end
end
flush_writes()
return replies
