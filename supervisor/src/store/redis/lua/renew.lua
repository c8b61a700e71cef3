-- renew.lua: extend owner's leases.
-- KEYS[1]: <prefix>:leases (ZSET)
-- ARGV[1]: prefix   ARGV[2]: owner   ARGV[3]: lease_until ms   ARGV[4 ..]: job ids
-- Returns: the ids whose lease owner no longer holds (not Started, other owner, deleted)
local prefix, owner, until_ms = ARGV[1], ARGV[2], ARGV[3]
local lost = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local k = jkey(prefix, id)
  local f = redis.call('HMGET', k, 'status', 'lease_owner')
  if f[1] == 'Started' and f[2] == owner then
    redis.call('HSET', k, 'lease_until', until_ms)
    redis.call('ZADD', KEYS[1], until_ms, id)
  else
    table.insert(lost, id)
  end
end
return lost
