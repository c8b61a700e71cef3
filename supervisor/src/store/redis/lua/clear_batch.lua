-- clear_batch.lua: one bounded step of clear_all: delete the oldest `batch` indexed jobs
-- (hash, logs, dependents, required_by) and their index entries. The caller repeats
-- until 0, then deletes the queues, the delayed, lease and retention sets.
-- KEYS[1]: <prefix>:jobs (ZSET index)
-- ARGV[1]: prefix   ARGV[2]: batch size
-- Returns: number of jobs removed in this step
local prefix = ARGV[1]
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do
  local k = jkey(prefix, id)
  redis.call('UNLINK', k, k .. ':logs', k .. ':dependents', k .. ':required_by')
  redis.call('ZREM', KEYS[1], id)
end
if #ids > 0 then
  publish(prefix, { k = 'deleted', ids = ids })
end
return #ids
