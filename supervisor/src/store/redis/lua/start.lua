-- start.lua: Created -> Dispatched (queued), WaitingForPrerequisites (registered as a
-- dependent of each unfinished prerequisite) or Error(prerequisite_failed).
-- KEYS[1]: <prefix>:job:<id>
-- ARGV[1]: prefix   ARGV[2]: id   ARGV[3]: now ms
-- Returns: {'OK', new status} | {'NOT_FOUND'} | {'BAD_STATE', status}
local prefix, id, now = ARGV[1], ARGV[2], ARGV[3]
local f = redis.call('HMGET', KEYS[1], 'status', 'prerequisites', 'script_type', 'created_at')
if not f[1] then
  return { 'NOT_FOUND' }
end
if f[1] ~= 'Created' then
  return { 'BAD_STATE', f[1] }
end
local prerequisites = prerequisites_of(f[2])
if not prerequisites then
  end_error(prefix, id, cjson.encode({ type = 'corrupt',
    message = 'its prerequisites field is not a JSON list of job ids' }), now)
  return { 'OK', 'Error' }
end
local waiting = {}
for _, p in ipairs(prerequisites) do
  local st = redis.call('HGET', jkey(prefix, p), 'status')
  if not st then
    end_error(prefix, id, prerequisite_failed('prerequisite ' .. p .. ' no longer exists'), now)
    return { 'OK', 'Error' }
  elseif st == 'Error' then
    end_error(prefix, id, prerequisite_failed('prerequisite ' .. p .. ' failed'), now)
    return { 'OK', 'Error' }
  elseif st ~= 'Finished' then
    table.insert(waiting, p)
  end
end
if #waiting > 0 then
  for _, p in ipairs(waiting) do
    redis.call('SADD', jkey(prefix, p) .. ':dependents', id)
    -- Read by complete_batch in the same call as the status: no set lookup per finish.
    redis.call('HSET', jkey(prefix, p), 'has_dependents', '1')
  end
  redis.call('HSET', KEYS[1], 'status', 'WaitingForPrerequisites', 'updated_at', now)
  restatus(prefix, id, 'Created', 'WaitingForPrerequisites', f[4])
  changed(prefix, id, 'WaitingForPrerequisites')
  return { 'OK', 'WaitingForPrerequisites' }
end
redis.call('HSET', KEYS[1], 'status', 'Dispatched', 'updated_at', now, 'queued_at', now)
restatus(prefix, id, 'Created', 'Dispatched', f[4])
changed(prefix, id, 'Dispatched')
enqueue(prefix, id, f[3], false)
return { 'OK', 'Dispatched' }
