-- complete_batch.lua: records a batch of attempt outcomes, whatever they are. Per item
-- the compare-and-set of check_started (the job is Started on the named attempt; else
-- nothing changes and the reply says why), then its outcome:
--   finish  -> Finished with the output; then releases the dependents now ready
--   fail    -> Error; then every dependent, transitively, ends in Error(prerequisite_failed)
--   retry   -> Dispatched, in the delayed set at not_before; keeps the error when given
--   release -> Dispatched at the HEAD of its queue (LPUSH); the attempt does not count
-- The lease of every item changed goes in one ZREM; one event per status for the batch;
-- the ended ones go in their retention index (<prefix>:done:<status>) in one ZADD each;
-- the status indexes change by one ZREM and one ZADD per new status.
-- KEYS[1]: <prefix>:leases (ZSET)   KEYS[2]: <prefix>:delayed (ZSET)
-- ARGV[1]: prefix   ARGV[2]: now ms
-- ARGV[3 ..]: five entries per item: kind, id, attempt, a, b, where kind and (a, b) are
--   'finish' (output, '') | 'fail' (error JSON, '') | 'retry' (not_before ms, error
--   JSON or '' to keep the current one) | 'release' ('', '')
-- Returns: one reply per item, in order:
--   {'OK'} | {'NOT_FOUND'} | {'BAD_STATE', status} | {'CONFLICT', attempt} | {'BAD_KIND', kind}
local prefix, now = ARGV[1], ARGV[2]
local replies, unleased, finished, failed, dispatched, parents, released = {}, {}, {}, {}, {}, {}, {}
-- (created ms, id) pairs per new status, for the status indexes.
local to_index = { Finished = {}, Error = {}, Dispatched = {} }
for i = 3, #ARGV - 4, 5 do
  local kind, id, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 3], ARGV[i + 4]
  local k = jkey(prefix, id)
  local bad, f = check_started(k, ARGV[i + 2])
  if bad then
    replies[#replies + 1] = bad
  elseif kind == 'finish' then
    redis.call('HDEL', k, 'lease_owner', 'lease_until')
    redis.call('HSET', k, 'status', 'Finished', 'output', a, 'finished_at', now, 'updated_at', now)
    finished[#finished + 1] = id
    if f[3] then
      parents[#parents + 1] = id
    end
  elseif kind == 'fail' then
    redis.call('HDEL', k, 'lease_owner', 'lease_until', 'not_before')
    redis.call('HSET', k, 'status', 'Error', 'error', a, 'finished_at', now, 'updated_at', now)
    failed[#failed + 1] = id
  elseif kind == 'retry' then
    redis.call('HDEL', k, 'lease_owner', 'lease_until')
    redis.call('HSET', k, 'status', 'Dispatched', 'not_before', a, 'updated_at', now)
    if b ~= '' then
      redis.call('HSET', k, 'error', b)
    end
    redis.call('ZADD', KEYS[2], a, id)
    dispatched[#dispatched + 1] = id
  elseif kind == 'release' then
    redis.call('HDEL', k, 'lease_owner', 'lease_until')
    redis.call('HINCRBY', k, 'attempt', -1)
    redis.call('HSET', k, 'status', 'Dispatched', 'updated_at', now, 'queued_at', now)
    dispatched[#dispatched + 1] = id
    released[#released + 1] = { id, f[4] }
  else
    -- A caller bug; never raise mid-batch (the items before it are already changed).
    replies[#replies + 1] = { 'BAD_KIND', kind }
    bad = true
  end
  if not bad then
    local status = (kind == 'finish' and 'Finished') or (kind == 'fail' and 'Error') or 'Dispatched'
    local list = to_index[status]
    list[#list + 1] = f[5]
    list[#list + 1] = id
    unleased[#unleased + 1] = id
    replies[#replies + 1] = { 'OK' }
  end
end
if #unleased > 0 then
  redis.call('ZREM', KEYS[1], unpack(unleased))
  redis.call('ZREM', prefix .. ':status:Started', unpack(unleased))
  for _, status in ipairs({ 'Finished', 'Error', 'Dispatched' }) do
    index_add(prefix, status, to_index[status])
  end
end
if #finished > 0 then
  mark_done(prefix, 'Finished', finished, now)
  changed_many(prefix, finished, 'Finished')
end
if #failed > 0 then
  mark_done(prefix, 'Error', failed, now)
  changed_many(prefix, failed, 'Error')
end
if #dispatched > 0 then
  changed_many(prefix, dispatched, 'Dispatched')
end
for _, r in ipairs(released) do
  enqueue(prefix, r[1], r[2], true)
end
for _, id in ipairs(parents) do
  release_dependents(prefix, id, now)
end
for _, id in ipairs(failed) do
  fail_dependents(prefix, id, now)
end
return replies
