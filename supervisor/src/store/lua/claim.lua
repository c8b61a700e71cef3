-- claim.lua: pop up to max ready ids (FIFO, LPOP from the head); each becomes Started,
-- attempt + 1, with a lease. Stale entries (job deleted or not Dispatched) are dropped.
-- KEYS[1]: <prefix>:q:work:type:<ScriptType> (LIST)   KEYS[2]: <prefix>:leases (ZSET)
-- ARGV[1]: prefix   ARGV[2]: max   ARGV[3]: owner   ARGV[4]: lease_until ms   ARGV[5]: now ms
-- Returns: one HGETALL field/value array per claimed job, in claim order
local prefix, max, owner, until_ms, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local claimed = {}
while #claimed < max do
  local id = redis.call('LPOP', KEYS[1])
  if not id then
    break
  end
  local k = jkey(prefix, id)
  if redis.call('HGET', k, 'status') == 'Dispatched' then
    redis.call('HINCRBY', k, 'attempt', 1)
    redis.call('HSET', k, 'status', 'Started', 'started_at', now, 'updated_at', now,
      'lease_owner', owner, 'lease_until', until_ms, 'runner', owner)
    redis.call('HDEL', k, 'not_before')
    redis.call('ZADD', KEYS[2], until_ms, id)
    changed(prefix, id, 'Started')
    table.insert(claimed, redis.call('HGETALL', k))
  end
end
return claimed
