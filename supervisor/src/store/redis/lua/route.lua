-- route.lua: opens or closes the lane of (context, script type): while open, claimers
-- of the shared pools leave that context's queue of the type alone (claim's `ready` set
-- is filtered by <root>:routes) and only its registered runner's pool claims from it.
-- The jobs stay on the context's queue either way: closing wakes the shared claimers.
-- KEYS[1]: <root>:routes (HASH)   KEYS[2]: the context's queue of the type
-- ARGV[1]: the context's namespace   ARGV[2]: field `<context>:<ScriptType>`
-- ARGV[3]: 'open' | 'close'   ARGV[4]: script type (for the `work` event)
-- Returns: the ids waiting on the context's queue.
local prefix, field, action = ARGV[1], ARGV[2], ARGV[3]
if action == 'open' then
  redis.call('HSET', KEYS[1], field, '1')
elseif redis.call('HDEL', KEYS[1], field) == 1 and redis.call('LLEN', KEYS[2]) > 0 then
  local _, n = split_space(prefix)
  publish(prefix, { k = 'work', script_type = ARGV[4], c = tonumber(n) })
end
return redis.call('LLEN', KEYS[2])
