-- enter_space.lua (cluster only): enters numbered context ARGV[1] in the server-wide
-- set of the namespaces holding jobs, before a script creates jobs there. The first
-- time (SADD added it), with sharded pub/sub (`SHARDED`), announces it on the
-- server-wide channel, which every listener subscribes to: they then subscribe to the
-- context's own channel (`<root>:{c<N>}:events`). Without sharded pub/sub every event
-- is on one channel already and nothing is announced.
-- KEYS[1]: <root>:{s}:spaces (SET)
-- ARGV[1]: the context number   ARGV[2]: <root>:{s}:events (the same slot as KEYS[1])
-- Returns: 1 when the context was new, else 0
local added = redis.call('SADD', KEYS[1], ARGV[1])
if added == 1 and SHARDED then
  redis.call('SPUBLISH', ARGV[2], cjson.encode({ k = 'space', c = tonumber(ARGV[1]) }))
end
return added
