-- append_logs.lua: append lines to a job's log, keeping only the newest max_lines.
-- KEYS[1]: <prefix>:job:<id>   KEYS[2]: <prefix>:job:<id>:logs (LIST, oldest first)
-- ARGV[1]: prefix   ARGV[2]: id   ARGV[3]: max_lines   ARGV[4]: lines of the batch
-- not shipped (only the newest max_lines can survive)   ARGV[5 ..]: lines (already truncated)
-- The job hash's `log_dropped` counts every line appended and no longer kept: the
-- sequence number of the oldest kept line.
-- Returns: {'OK'} | {'NOT_FOUND'}
local prefix, id = ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 'NOT_FOUND' }
end
-- RPUSH in chunks: unpack() of thousands of values overflows Lua's C stack.
local i = 5
while i <= #ARGV do
  local last = math.min(i + 999, #ARGV)
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, last))
  i = last + 1
end
local excess = redis.call('LLEN', KEYS[2]) - tonumber(ARGV[3])
if excess > 0 then
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
else
  excess = 0
end
local dropped = excess + tonumber(ARGV[4])
if dropped > 0 then
  redis.call('HINCRBY', KEYS[1], 'log_dropped', dropped)
end
publish(prefix, { k = 'log', id = id })
return { 'OK' }
