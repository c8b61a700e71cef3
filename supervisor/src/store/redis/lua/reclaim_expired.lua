-- reclaim_expired.lua: Started jobs whose lease_until < now: re-queued at the tail (the
-- attempt counts), or Error(runner_lost) with dependents failed on the last attempt.
-- Removing each entry from the lease set inside this one script is what makes two
-- racing reclaimers handle each expired lease exactly once.
-- KEYS[1]: <prefix>:leases (ZSET, score lease_until ms)
-- ARGV[1]: prefix   ARGV[2]: now ms   ARGV[3]: max
-- Returns: the ids handled
local prefix, now = ARGV[1], ARGV[2]
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[3]))
local handled = {}
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  local k = jkey(prefix, id)
  local f = redis.call('HMGET', k, 'status', 'attempt', 'retries', 'script_type', 'lease_owner',
    'created_at')
  if f[1] == 'Started' then
    table.insert(handled, id)
    local attempt, max_attempts = tonumber(f[2]), tonumber(f[3]) + 1
    if attempt >= max_attempts then
      local msg = 'lease of ' .. (f[5] or '?') .. ' expired on attempt ' .. f[2] .. ' of ' .. max_attempts
      end_error(prefix, id, cjson.encode({ type = 'runner_lost', message = msg }), now)
      fail_dependents(prefix, id, now)
    else
      clear_lease(prefix, k, id)
      redis.call('HSET', k, 'status', 'Dispatched', 'updated_at', now, 'queued_at', now)
      restatus(prefix, id, 'Started', 'Dispatched', f[6])
      changed(prefix, id, 'Dispatched')
      enqueue(prefix, id, f[4], false)
    end
  end
end
return handled
