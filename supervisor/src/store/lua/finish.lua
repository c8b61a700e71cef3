-- finish.lua: CAS Started(attempt) -> Finished; releases dependents that are now ready.
-- KEYS[1]: <prefix>:job:<id>
-- ARGV[1]: prefix   ARGV[2]: id   ARGV[3]: attempt   ARGV[4]: output   ARGV[5]: now ms
-- Returns: {'OK'} | {'NOT_FOUND'} | {'BAD_STATE', status} | {'CONFLICT', attempt}
local prefix, id, now = ARGV[1], ARGV[2], ARGV[5]
local bad = check_started(KEYS[1], ARGV[3])
if bad then
  return bad
end
clear_lease(prefix, KEYS[1], id)
redis.call('HSET', KEYS[1], 'status', 'Finished', 'output', ARGV[4], 'finished_at', now, 'updated_at', now)
changed(prefix, id, 'Finished')
release_dependents(prefix, id, now)
return { 'OK' }
