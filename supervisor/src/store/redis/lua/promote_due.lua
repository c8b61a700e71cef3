-- promote_due.lua: move delayed jobs whose not_before <= now to the tail of their queue.
-- KEYS[1]: <prefix>:delayed (ZSET, score not_before ms)
-- ARGV[1]: prefix   ARGV[2]: now ms   ARGV[3]: max
-- Returns: number of jobs moved
local prefix = ARGV[1]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local k = jkey(prefix, id)
  local f = redis.call('HMGET', k, 'status', 'script_type')
  if f[1] == 'Dispatched' then
    redis.call('HDEL', k, 'not_before')
    push_ready(prefix, id, f[2], false, ARGV[2])
    moved = moved + 1
  end
end
return moved
