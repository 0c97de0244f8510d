--[[ open_account: create an account on first use (idempotent).

KEYS[1] acct         account hash
KEYS[2] accounts     set of the shard's account labels
KEYS[3] account_seq  shard counter of accounts opened
KEYS[4] stream       the shard's journal stream
KEYS[5] seq          the shard's event counter

ARGV[1..3]           now_ms, id_base, id_step (see lib/common.lua)
ARGV[4] label        e.g. RESERVE_USDT_CRYPTO
ARGV[5] currency     e.g. USDT
ARGV[6] account_type crypto | fiat
ARGV[7] kind         reserve | user
ARGV[8] number_prefix e.g. RUSDTc (the account number is the prefix and the id, 4+ digits)

Returns {code, account_id, account_number, created_ms}
  0 ok: opened now (journals account_open)
  1 ok_existing: the account already existed
  40 ledger_not_loaded: the shard's event counter is missing (Redis lost its data): nothing
     written, so that a lost account is restored by `reserves rebuild`, never reopened at zero
A key of the wrong type, a non-integer counter: an error reply, nothing written.
]]
-- @include common

local acct_key = KEYS[1]
local bad = check_seq(KEYS[5]) or check_type(KEYS[4], 'stream') or check_type(acct_key, 'hash')
  or check_type(KEYS[2], 'set') or check_type(KEYS[3], 'string')
if not bad and not string.match(rcall('GET', KEYS[3]) or '0', '^%d+$') then
  bad = 'malformed key ' .. KEYS[3] .. ': not an account counter'
end
if bad then
  return checked_reply(bad, { 40, '0', '', '0' })
end
local existing = rcall('HMGET', acct_key, 'account_id', 'account_number', 'created_ms')
if existing[1] then
  return { 1, existing[1], existing[2], existing[3] }
end

local n = rcall('INCR', KEYS[3])
local account_id = (n - 1) * ID_STEP + ID_BASE
local number = ARGV[8] .. string.format('%04d', account_id)
-- total and locked first: a small hash is a listpack searched from its start, and these two are
-- the fields every operation writes
rcall('HSET', acct_key, 'total', '0', 'locked', '0', 'label', ARGV[4], 'currency', ARGV[5],
  'account_type', ARGV[6], 'kind', ARGV[7], 'account_id', istr(account_id),
  'account_number', number, 'created_ms', ARGV[1])
rcall('SADD', KEYS[2], ARGV[4])
apply(acct_key, KEYS[4], KEYS[5], 'account_open', ARGV[4], '', 0, 0, 0, '', nil,
  'cur', ARGV[5], 'type', ARGV[6], 'kind', ARGV[7], 'aid', istr(account_id), 'num', number)
return { 0, istr(account_id), number, ARGV[1] }
