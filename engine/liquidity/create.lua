--[[ create: record one liquidity request, once per reference, within the reserve's daily cap.

Validate -> the same reference exists (idempotent) -> another request of the reserve is open
-> cap -> write. The amount is lowered to what is left of the day's cap.

KEYS[1] request   hash: the request's record
KEYS[2] index     sorted set: reference by created_ms
KEYS[3] open      hash: account -> reference of its open request
KEYS[4] used      string: minor units requested today for this account

ARGV[1] now_ms            milliseconds since the epoch
ARGV[2] reference
ARGV[3] account
ARGV[4] amount_minor      wanted (> 0)
ARGV[5] cap_minor         the day's cap
ARGV[6] record_ttl_s      how long the record is kept
ARGV[7] used_ttl_s        how long the day's counter is kept
ARGV[8] prune_before_ms   index entries older than this are dropped
ARGV[9..] field, value    more fields of the record

Returns {code, amount_minor, detail}
  0 created: amount_minor is the amount requested
  1 exists: this reference was already requested (detail: its state)
  2 open: another request of the reserve is open (detail: its reference)
  3 cap reached: nothing is left of today's cap (detail: minor units used)
]]
local rcall = redis.call
local request, index, open, used = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now_ms, reference, account = ARGV[1], ARGV[2], ARGV[3]
local wanted, cap = tonumber(ARGV[4]), tonumber(ARGV[5])

if rcall('EXISTS', request) == 1 then
  return { 1, rcall('HGET', request, 'amount_minor'), rcall('HGET', request, 'state') }
end
local other = rcall('HGET', open, account)
if other then return { 2, '0', other } end
local spent = tonumber(rcall('GET', used) or '0')
if spent >= cap then return { 3, '0', tostring(spent) } end
local amount = math.min(wanted, cap - spent)

rcall('HSET', request, 'reference', reference, 'account', account, 'state', 'requested',
  'amount_minor', string.format('%d', amount), 'created_ms', now_ms, 'updated_ms', now_ms,
  'attempts', '0', 'next_attempt_ms', now_ms)
for i = 9, #ARGV, 2 do rcall('HSET', request, ARGV[i], ARGV[i + 1]) end
rcall('EXPIRE', request, ARGV[6])
rcall('ZADD', index, now_ms, reference)
rcall('ZREMRANGEBYSCORE', index, '-inf', '(' .. ARGV[8])
rcall('HSET', open, account, reference)
rcall('INCRBY', used, string.format('%d', amount))
rcall('EXPIRE', used, ARGV[7])
return { 0, string.format('%d', amount), '' }
