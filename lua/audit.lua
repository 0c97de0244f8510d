--[[ audit: journal an admin action that moves no money (cache clear, token created).

It takes its event id from the shard's counter and appends in the same step, so ids stay in
stream order like every other event's.

KEYS[1] stream   the shard's journal stream
KEYS[2] seq      the shard's event counter

ARGV[1..3]       now_ms, id_base, id_step
ARGV[4] action   e.g. cache_clear
ARGV[5] meta     JSON text: actor, action, ip and details

Returns {code, event_id}
  0 ok
  40 ledger_not_loaded  the shard's event counter is missing (Redis lost its data): nothing written
A key of the wrong type, a non-integer counter: an error reply, nothing written.
]]
-- @include common

local bad = check_seq(KEYS[2]) or check_type(KEYS[1], 'stream')
if bad then
  return checked_reply(bad, { 40, 0 })
end

local seq = rcall('INCR', KEYS[2])
local id = (seq - 1) * ID_STEP + ID_BASE
rcall('XADD', KEYS[1], '*', 'id', istr(id), 'op', 'audit', 'acct', '', 'ref', ARGV[4], 'amt', '0',
  'dt', '0', 'dl', '0', 'total', '0', 'locked', '0', 'ts', ARGV[1], 'meta', ARGV[5])
return { 0, id }
