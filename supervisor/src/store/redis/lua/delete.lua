-- delete.lua: remove a job and all its keys: hash, logs, dependents set, queue/delayed/
-- lease/index/retention entries, its entry in its prerequisites' dependents and
-- required_by sets, its own required_by set. Jobs waiting on it end in
-- Error(prerequisite_failed).
-- KEYS[1]: <prefix>:job:<id>   KEYS[2]: <prefix>:leases   KEYS[3]: <prefix>:delayed
-- KEYS[4]: <prefix>:jobs
-- ARGV[1]: prefix   ARGV[2]: id   ARGV[3]: now ms
-- Returns: {'OK'} | {'NOT_FOUND'}
local prefix, id, now = ARGV[1], ARGV[2], ARGV[3]
local f = redis.call('HMGET', KEYS[1], 'status', 'script_type', 'prerequisites')
if not f[1] then
  return { 'NOT_FOUND' }
end
if f[1] == 'Dispatched' then
  redis.call('LREM', ready_key(prefix, f[2]), 0, id)
end
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('ZREM', prefix .. ':done:' .. f[1], id)
redis.call('ZREM', prefix .. ':status:' .. f[1], id)
redis.call('HINCRBY', prefix .. ':counts', 'type:' .. (f[2] or '?'), -1)
for _, p in ipairs(prerequisites_of(f[3]) or {}) do
  redis.call('SREM', jkey(prefix, p) .. ':dependents', id)
  redis.call('SREM', jkey(prefix, p) .. ':required_by', id)
end
local dkey = KEYS[1] .. ':dependents'
for _, d in ipairs(redis.call('SMEMBERS', dkey)) do
  if redis.call('HGET', jkey(prefix, d), 'status') == 'WaitingForPrerequisites' then
    end_error(prefix, d, prerequisite_failed('prerequisite ' .. id .. ' was deleted'), now)
    fail_dependents(prefix, d, now)
  end
end
redis.call('DEL', KEYS[1], dkey, KEYS[1] .. ':logs', KEYS[1] .. ':required_by')
publish(prefix, { k = 'deleted', ids = { id } })
return { 'OK' }
