--[[ advance: move one liquidity request from one of the expected states to the next.

KEYS[1] request   hash: the request's record
KEYS[2] open      hash: account -> reference of its open request
KEYS[3] used      string: minor units requested on the request's day, for its account

ARGV[1] now_ms        milliseconds since the epoch
ARGV[2] from          the states it may move from, comma-separated
ARGV[3] to            the new state
ARGV[4] due_ms        0, or: only if the record's next_attempt_ms <= due_ms (a claim)
ARGV[5] close         1: the reserve has no open request any more (if it was this one)
ARGV[6] release_cap   1: give the request's amount back to its day's cap
ARGV[7..] field, value  fields to set

Returns {code, state}
  0 applied (state: the new state)
  1 no such request
  2 not in an expected state (state: its state); nothing written
  3 not due yet; nothing written
]]
local rcall = redis.call
local request, open, used = KEYS[1], KEYS[2], KEYS[3]
local now_ms, to = ARGV[1], ARGV[3]

local state = rcall('HGET', request, 'state')
if not state then return { 1, '' } end
if not string.find(',' .. ARGV[2] .. ',', ',' .. state .. ',', 1, true) then
  return { 2, state }
end
local due = tonumber(ARGV[4])
if due > 0 and tonumber(rcall('HGET', request, 'next_attempt_ms')) > due then
  return { 3, state }
end

rcall('HSET', request, 'state', to, 'updated_ms', now_ms)
for i = 7, #ARGV, 2 do rcall('HSET', request, ARGV[i], ARGV[i + 1]) end
if ARGV[5] == '1' then
  local account = rcall('HGET', request, 'account')
  if rcall('HGET', open, account) == rcall('HGET', request, 'reference') then
    rcall('HDEL', open, account)
  end
end
if ARGV[6] == '1' and rcall('EXISTS', used) == 1 then
  rcall('DECRBY', used, rcall('HGET', request, 'amount_minor'))
end
return { 0, to }
