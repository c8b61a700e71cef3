-- trim_done.lua: retention, one bounded step for one terminal status. Looks at the
-- earliest-ended jobs of <prefix>:done:<status> (at most `max`) while they are past
-- retention: ended at or before `cutoff`, or beyond the newest `keep` of the status.
-- Each is removed (hash, logs, dependents, required_by; its index and retention entries;
-- its links in its prerequisites' required_by sets; its status index entry and its count
-- in <prefix>:counts), unless a job that has not ended
-- names it as a prerequisite (its :required_by set, pruned here of jobs that ended or
-- are gone): then it is rescored to `now` (looked at again one retention age later).
-- Pruning is bounded by `budget` member checks per call; a job not fully checked stays
-- at the head for the next call.
-- KEYS[1]: <prefix>:done:<status> (ZSET, score ended ms)   KEYS[2]: <prefix>:jobs
-- ARGV[1]: prefix   ARGV[2]: status   ARGV[3]: now ms   ARGV[4]: cutoff ms
-- ARGV[5]: keep (count)   ARGV[6]: max   ARGV[7]: budget
-- Returns: {removed, kept_needed, more (1 when stopped at max or budget, else 0)}
local prefix, status, now = ARGV[1], ARGV[2], ARGV[3]
local cutoff, keep, max = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local budget = tonumber(ARGV[7])
local over = redis.call('ZCARD', KEYS[1]) - keep
-- Within the count, only jobs ended at or before the cutoff are past retention: read
-- just those (most ticks: none) instead of the first `max`.
local head
if over > 0 then
  head = redis.call('ZRANGE', KEYS[1], 0, max - 1, 'WITHSCORES')
else
  head = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[4], 'BYSCORE', 'LIMIT', 0, max, 'WITHSCORES')
end
local removed, kept, handled, more = 0, 0, 0, 0

-- 'needed', 'free', or 'unknown' (budget spent before an answer).
local function needed(id)
  local rkey = jkey(prefix, id) .. ':required_by'
  while true do
    if budget <= 0 then
      return 'unknown'
    end
    local some = redis.call('SRANDMEMBER', rkey, math.min(budget, 100))
    if #some == 0 then
      return 'free'
    end
    for _, d in ipairs(some) do
      local st = redis.call('HGET', jkey(prefix, d), 'status')
      if st and st ~= 'Finished' and st ~= 'Error' then
        return 'needed'
      end
      redis.call('SREM', rkey, d)
      budget = budget - 1
    end
  end
end

for i = 1, #head, 2 do
  local id, score = head[i], tonumber(head[i + 1])
  if score > cutoff and handled >= over then
    break
  end
  local k = jkey(prefix, id)
  local f = redis.call('HMGET', k, 'status', 'prerequisites', 'script_type')
  if f[1] ~= status then
    -- A stale entry (the job is gone): nothing else refers to it.
    redis.call('ZREM', KEYS[1], id)
  else
    local verdict = needed(id)
    if verdict == 'unknown' then
      more = 1
      break
    elseif verdict == 'needed' then
      redis.call('ZADD', KEYS[1], now, id)
      kept = kept + 1
    else
      for _, p in ipairs(prerequisites_of(f[2]) or {}) do
        redis.call('SREM', jkey(prefix, p) .. ':required_by', id)
      end
      redis.call('UNLINK', k, k .. ':logs', k .. ':dependents', k .. ':required_by')
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZREM', KEYS[2], id)
      redis.call('ZREM', prefix .. ':status:' .. status, id)
      redis.call('HINCRBY', prefix .. ':counts', 'type:' .. (f[3] or '?'), -1)
      removed = removed + 1
    end
  end
  handled = handled + 1
end
if handled == max then
  more = 1
end
return { removed, kept, more }
