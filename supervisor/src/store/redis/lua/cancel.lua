-- cancel.lua: Created/Dispatched/WaitingForPrerequisites -> Error(cancelled) at once
-- (removed from its queue, the delayed set and its prerequisites' dependents; its own
-- dependents fail); Started -> cancel_requested flag set and a `cancel` event published
-- for the instance running it; terminal -> unchanged.
-- KEYS[1]: <prefix>:job:<id>   KEYS[2]: <prefix>:delayed
-- ARGV[1]: prefix   ARGV[2]: id   ARGV[3]: now ms   ARGV[4]: error JSON
-- Returns: {'CANCELLED'} | {'RUNNING', owner, attempt} | {'TERMINAL', status} | {'NOT_FOUND'}
local prefix, id, now = ARGV[1], ARGV[2], ARGV[3]
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_owner', 'attempt', 'script_type', 'prerequisites')
if not f[1] then
  return { 'NOT_FOUND' }
end
if f[1] == 'Error' or f[1] == 'Finished' then
  return { 'TERMINAL', f[1] }
end
if f[1] == 'Started' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'updated_at', now)
  -- The instance running it (maybe another) stops it on this event.
  publish(prefix, { k = 'cancel', id = id })
  return { 'RUNNING', f[2] or '', f[3] }
end
if f[1] == 'Dispatched' then
  redis.call('LREM', ready_key(prefix, f[4]), 0, id)
  redis.call('ZREM', KEYS[2], id)
end
for _, p in ipairs(prerequisites_of(f[5]) or {}) do
  redis.call('SREM', jkey(prefix, p) .. ':dependents', id)
end
end_error(prefix, id, ARGV[4], now)
fail_dependents(prefix, id, now)
return { 'CANCELLED' }
