-- release.lua: graceful shutdown: CAS Started(attempt) -> Dispatched at the HEAD of its
-- queue (LPUSH); the attempt does not count (decremented).
-- KEYS[1]: <prefix>:job:<id>
-- ARGV[1]: prefix   ARGV[2]: id   ARGV[3]: attempt   ARGV[4]: now ms
-- Returns: {'OK'} | {'NOT_FOUND'} | {'BAD_STATE', status} | {'CONFLICT', attempt}
local prefix, id, now = ARGV[1], ARGV[2], ARGV[4]
local bad = check_started(KEYS[1], ARGV[3])
if bad then
  return bad
end
clear_lease(prefix, KEYS[1], id)
redis.call('HINCRBY', KEYS[1], 'attempt', -1)
redis.call('HSET', KEYS[1], 'status', 'Dispatched', 'updated_at', now)
changed(prefix, id, 'Dispatched')
push_ready(prefix, id, redis.call('HGET', KEYS[1], 'script_type'), true, now)
return { 'OK' }
