-- route.lua: opens or closes the lane of (context, script type): while open, that
-- context's jobs of that type are queued on the lane instead of the type's queue
-- (ready_key in common.lua). Closing moves up to `batch` ids from the lane back to the
-- tail of the type's queue, in order; the caller repeats until the answer is 0, so
-- no job stays on a lane nobody claims from.
-- KEYS[1]: <prefix>:routes (HASH)   KEYS[2]: the lane   KEYS[3]: the type's queue
-- ARGV[1]: prefix   ARGV[2]: field `<context>:<ScriptType>`   ARGV[3]: 'open' | 'close'
-- ARGV[4]: batch   ARGV[5]: script type (for the `work` event)
-- Returns: the ids still on the lane after this call (0 once drained; 0 for 'open').
local prefix, field, action, batch = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if action == 'open' then
  redis.call('HSET', KEYS[1], field, '1')
  return 0
end
redis.call('HDEL', KEYS[1], field)
local moved = 0
while moved < batch do
  if not redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') then
    break
  end
  moved = moved + 1
end
if moved > 0 then
  publish(prefix, { k = 'work', script_type = ARGV[5] })
end
return redis.call('LLEN', KEYS[2])
