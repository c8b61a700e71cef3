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
for _, a in ipairs(jobs) do
  local k = jkey(prefix, a[2])
  create_job({ k, KEYS[1] }, a)
  if start then
    out[#out + 1] = start_job({ k }, { prefix, a[2], a[3] })[2]
  else
    out[#out + 1] = 'Created'
  end
end
return out
