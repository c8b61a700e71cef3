-- create_batch.lua: create.lua, and start.lua when asked, for many jobs of one
-- namespace, all or nothing: every id and prerequisite is checked before anything is
-- written (the checks of create.lua, and an id repeated in the batch).
-- KEYS[1]: <prefix>:jobs (ZSET index)
-- ARGV[1]: prefix   ARGV[2]: '1' to start each job, '0' not to
-- ARGV[3 ..]: per job: id, created_at ms, n prerequisites, the n prerequisite ids,
--   m (the number of field/value entries), the m entries (create.lua's pairs)
-- Returns: {'OK', status of each job in order} | {'EXISTS', id} | {'PREREQ_MISSING', id}
local prefix, start = ARGV[1], ARGV[2] == '1'
local jobs, i = {}, 3
while i <= #ARGV do
  local n = tonumber(ARGV[i + 2])
  local argv = { prefix, ARGV[i], ARGV[i + 1], ARGV[i + 2] }
  for j = 1, n do
    argv[#argv + 1] = ARGV[i + 2 + j]
  end
  i = i + 3 + n
  local m = tonumber(ARGV[i])
  for j = 1, m do
    argv[#argv + 1] = ARGV[i + j]
  end
  i = i + 1 + m
  jobs[#jobs + 1] = argv
end
local seen = {}
for _, a in ipairs(jobs) do
  if seen[a[2]] or redis.call('EXISTS', jkey(prefix, a[2])) == 1 then
    return { 'EXISTS', a[2] }
  end
  seen[a[2]] = true
  for j = 5, 4 + tonumber(a[4]) do
    if redis.call('EXISTS', jkey(prefix, a[j])) == 0 then
      return { 'PREREQ_MISSING', a[j] }
    end
  end
end
local out = { 'OK' }
-- A started job without prerequisites goes straight to Dispatched, its index and count
-- entries, queue pushes and events written once per batch (per script type): what
-- create_job then start_job would leave, in fewer commands. Any other job takes the
-- two bodies one after the other.
local direct = {}
for _, a in ipairs(jobs) do
  local k = jkey(prefix, a[2])
  if start and a[4] == '0' then
    local fields, script_type = {}, '?'
    for j = 5, #a, 2 do
      local v = a[j + 1]
      if a[j] == 'status' then
        v = 'Dispatched'
      elseif a[j] == 'script_type' then
        script_type = v
      end
      fields[#fields + 1] = a[j]
      fields[#fields + 1] = v
    end
    fields[#fields + 1] = 'queued_at'
    fields[#fields + 1] = a[3]
    redis.call('HSET', k, unpack(fields))
    local d = direct[script_type]
    if not d then
      d = { ids = {}, scored = {} }
      direct[script_type] = d
    end
    d.ids[#d.ids + 1] = a[2]
    d.scored[#d.scored + 1] = a[3]
    d.scored[#d.scored + 1] = a[2]
    out[#out + 1] = 'Dispatched'
  else
    create_job({ k, KEYS[1] }, a)
    if start then
      out[#out + 1] = start_job({ k }, { prefix, a[2], a[3] })[2]
    else
      out[#out + 1] = 'Created'
    end
  end
end
-- At most 1,000 jobs per call (MAX_BATCH_JOBS): 2,000 values per unpack(), under
-- Lua's C stack limit.
for script_type, d in pairs(direct) do
  redis.call('ZADD', KEYS[1], unpack(d.scored))
  redis.call('ZADD', prefix .. ':status:Dispatched', unpack(d.scored))
  redis.call('HINCRBY', prefix .. ':counts', 'type:' .. script_type, #d.ids)
  redis.call('RPUSH', qkey(prefix, script_type), unpack(d.ids))
  changed_many(prefix, d.ids, 'Dispatched')
  local root, n = split_space(prefix)
  if n and not CLUSTER then
    -- As create_job would (on a cluster the Rust side keeps it: another slot).
    redis.call('SADD', root .. ':spaces', n)
  end
  announce_work(prefix, script_type)
end
return out
