-- mark_indexed.lua: run when a store connects. A store whose <prefix>:jobs index is
-- empty holds no job an older version wrote, so the upgrade walk (backfill.lua) has
-- nothing to do: its cursor is set to 'done' (when not set yet), and the retention loop
-- never walks the jobs this version indexes as it creates them.
-- KEYS[1]: <prefix>:jobs   KEYS[2]: <prefix>:backfill
-- Returns: 1 when it marked the walk done, else 0
if redis.call('EXISTS', KEYS[2]) == 0 and redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('SET', KEYS[2], 'done')
  return 1
end
return 0
