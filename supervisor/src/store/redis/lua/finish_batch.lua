-- finish_batch.lua: for each job, CAS Started(attempt) -> Finished; then releases the
-- dependents that are now ready. One call records a whole batch of outcomes.
-- KEYS[1]: <prefix>:leases (ZSET)
-- ARGV[1]: prefix   ARGV[2]: now ms   ARGV[3 ..]: triples id, attempt, output
-- Returns: one reply per triple, in order:
--   {'OK'} | {'NOT_FOUND'} | {'BAD_STATE', status} | {'CONFLICT', attempt}
local prefix, now = ARGV[1], ARGV[2]
local replies, done, parents = {}, {}, {}
for i = 3, #ARGV - 2, 3 do
  local id = ARGV[i]
  local k = jkey(prefix, id)
  -- check_started's CAS, with the dependents flag read in the same call.
  local f = redis.call('HMGET', k, 'status', 'attempt', 'has_dependents')
  if not f[1] then
    replies[#replies + 1] = { 'NOT_FOUND' }
  elseif f[1] ~= 'Started' then
    replies[#replies + 1] = { 'BAD_STATE', f[1] }
  elseif f[2] ~= ARGV[i + 1] then
    replies[#replies + 1] = { 'CONFLICT', f[2] }
  else
    redis.call('HDEL', k, 'lease_owner', 'lease_until')
    redis.call('HSET', k, 'status', 'Finished', 'output', ARGV[i + 2], 'finished_at', now, 'updated_at', now)
    done[#done + 1] = id
    if f[3] then
      parents[#parents + 1] = id
    end
    replies[#replies + 1] = { 'OK' }
  end
end
if #done > 0 then
  redis.call('ZREM', KEYS[1], unpack(done))
  changed_many(prefix, done, 'Finished')
  for _, id in ipairs(parents) do
    release_dependents(prefix, id, now)
  end
end
return replies
