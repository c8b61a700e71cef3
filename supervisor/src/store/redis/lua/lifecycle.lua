-- lifecycle.lua: the bodies of create.lua and start.lua as functions (each takes the
-- KEYS and ARGV its script documents below), prepended after common.lua to create.lua,
-- start.lua and create_start.lua, so the one definition serves all three.

-- create.lua: store a new job as Created and index it; it is recorded in each
-- prerequisite's :required_by set (what retention keeps a needed prerequisite by), in
-- the Created status index and counted per script type (<prefix>:counts). A job of a
-- numbered context's namespace enters that context in <root>:spaces (the namespaces
-- that sweeps, listings and counts go through).
-- KEYS[1]: <prefix>:job:<id> (HASH)   KEYS[2]: <prefix>:jobs (ZSET index)
-- ARGV[1]: prefix   ARGV[2]: id   ARGV[3]: created_at ms   ARGV[4]: n prerequisites
-- ARGV[5 .. 4+n]: prerequisite ids   ARGV[5+n ..]: hash field/value pairs
-- Returns: {'OK'} | {'EXISTS'} | {'PREREQ_MISSING', id}
local function create_job(KEYS, ARGV)
  local prefix, id = ARGV[1], ARGV[2]
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return { 'EXISTS' }
  end
  local n = tonumber(ARGV[4])
  for i = 5, 4 + n do
    if redis.call('EXISTS', jkey(prefix, ARGV[i])) == 0 then
      return { 'PREREQ_MISSING', ARGV[i] }
    end
  end
  -- Every field in one HSET; the script type (for the count) is among them.
  local fields, script_type = {}, '?'
  for i = 5 + n, #ARGV, 2 do
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
    if ARGV[i] == 'script_type' then
      script_type = ARGV[i + 1]
    end
  end
  if #fields > 0 then
    redis.call('HSET', KEYS[1], unpack(fields))
  end
  for i = 5, 4 + n do
    redis.call('SADD', jkey(prefix, ARGV[i]) .. ':required_by', id)
  end
  redis.call('ZADD', KEYS[2], ARGV[3], id)
  redis.call('ZADD', prefix .. ':status:Created', ARGV[3], id)
  redis.call('HINCRBY', prefix .. ':counts', 'type:' .. script_type, 1)
  local root, context = split_space(prefix)
  if context and not CLUSTER then
    redis.call('SADD', root .. ':spaces', context)
  end
  return { 'OK' }
end

-- start.lua: Created -> Dispatched (queued), WaitingForPrerequisites (registered as a
-- dependent of each unfinished prerequisite) or Error(prerequisite_failed).
-- KEYS[1]: <prefix>:job:<id>
-- ARGV[1]: prefix   ARGV[2]: id   ARGV[3]: now ms
-- Returns: {'OK', new status} | {'NOT_FOUND'} | {'BAD_STATE', status}
local function start_job(KEYS, ARGV)
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
end
