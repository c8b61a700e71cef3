-- retry_later.lua: CAS Started(attempt) -> Dispatched, scheduled in the delayed set.
-- KEYS[1]: <prefix>:job:<id>   KEYS[2]: <prefix>:delayed (ZSET)
-- ARGV[1]: prefix   ARGV[2]: id   ARGV[3]: attempt   ARGV[4]: not_before ms
-- ARGV[5]: last error JSON, or '' to keep the current one   ARGV[6]: now ms
-- Returns: {'OK'} | {'NOT_FOUND'} | {'BAD_STATE', status} | {'CONFLICT', attempt}
local prefix, id, now = ARGV[1], ARGV[2], ARGV[6]
local bad = check_started(KEYS[1], ARGV[3])
if bad then
  return bad
end
clear_lease(prefix, KEYS[1], id)
redis.call('HSET', KEYS[1], 'status', 'Dispatched', 'not_before', ARGV[4], 'updated_at', now)
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'error', ARGV[5])
end
redis.call('ZADD', KEYS[2], ARGV[4], id)
changed(prefix, id, 'Dispatched')
return { 'OK' }
