--[[ alert: raise or clear one alert exactly once, whichever API process sees the change first.

The open alerts live in one hash; each transition is journalled in shard 0's stream (op
alert_raised / alert_cleared, no account, no money) so that it reaches Postgres by the same
path as every other event. Raising a key that is open at another level clears that one first.

KEYS[1] active    hash: alert key -> JSON record of the open alert
KEYS[2] history   list: JSON records of raised and cleared alerts, newest first
KEYS[3] stream    shard 0's journal stream
KEYS[4] seq       shard 0's event counter

ARGV[1] now_ms        milliseconds since the epoch
ARGV[2] id_base       event id of the shard's first event (shard + 1)
ARGV[3] id_step       the shard count
ARGV[4] action        raise | clear
ARGV[5] key           alert key: <account>|<kind>
ARGV[6] record        raise: JSON {account, kind, level, message, value}; clear: ""
ARGV[7] history_max   entries kept in the history list

Returns {code, event_id, replaced_event_id}
  0 applied (replaced_event_id: the raise of the alert this one replaced, or 0)
  1 already so: the alert is open at this level (raise) or not open (clear); nothing written
  40 ledger_not_loaded: shard 0's event counter is missing (Redis lost its data): nothing
     written (an INCR here would recreate the counter that marks the shard as loaded)
]]
local rcall = redis.call
local active, history, stream, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now_ms, action, key = ARGV[1], ARGV[4], ARGV[5]
local history_max = tonumber(ARGV[7])
if rcall('EXISTS', seq) == 0 then
  return { 40, '0', '0' }
end

local function append(op, meta)
  local n = rcall('INCR', seq)
  local id = string.format('%d', (n - 1) * tonumber(ARGV[3]) + tonumber(ARGV[2]))
  rcall('XADD', stream, '*', 'id', id, 'op', op, 'acct', '', 'ref', key, 'amt', '0',
    'dt', '0', 'dl', '0', 'total', '0', 'locked', '0', 'ts', now_ms, 'meta', meta)
  return id
end

local function remember(rec)
  rcall('LPUSH', history, cjson.encode(rec))
  rcall('LTRIM', history, 0, history_max - 1)
end

local function clear(rec)
  rec.cleared_ms = now_ms
  rec.state = 'cleared'
  local id = append('alert_cleared', cjson.encode({alert_id = rec.id, account = rec.account,
    kind = rec.kind, level = rec.level}))
  rcall('HDEL', active, key)
  remember(rec)
  return id
end

local current = rcall('HGET', active, key)
if action == 'clear' then
  if not current then return { 1, '0', '0' } end
  return { 0, clear(cjson.decode(current)), '0' }
end

local rec = cjson.decode(ARGV[6])
local replaced = '0'
if current then
  local open = cjson.decode(current)
  if open.level == rec.level then return { 1, '0', '0' } end
  replaced = open.id
  clear(open)
end
local id = append('alert_raised', ARGV[6])
rec.id = id
rec.key = key
rec.raised_ms = now_ms
rec.state = 'open'
rcall('HSET', active, key, cjson.encode(rec))
remember(rec)
return { 0, id, replaced }
