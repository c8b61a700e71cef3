-- logs_from.lua: a job's kept log lines from sequence number `from` on (see append_logs).
-- KEYS[1]: <prefix>:job:<id>   KEYS[2]: <prefix>:job:<id>:logs
-- ARGV[1]: from   ARGV[2]: limit (at most this many lines; >= 1)
-- Returns: {'NOT_FOUND'} | {'OK', first, line..} where first is the sequence number of
-- the first line returned: max(from, log_dropped).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 'NOT_FOUND' }
end
local dropped = tonumber(redis.call('HGET', KEYS[1], 'log_dropped') or '0')
local from = tonumber(ARGV[1])
local first = math.max(from, dropped)
local reply = { 'OK', tostring(first) }
local limit = tonumber(ARGV[2])
local lines = redis.call('LRANGE', KEYS[2], first - dropped, first - dropped + limit - 1)
for _, line in ipairs(lines) do
  reply[#reply + 1] = line
end
return reply
