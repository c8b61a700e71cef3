-- backfill.lua: one bounded step of indexing jobs an older version wrote, which are in
-- none of the status indexes, retention indexes or counts. Walks <prefix>:jobs from
-- the cursor kept in KEYS[2]; a job already in its status index is left alone (this
-- version indexed it); any other one is added to <prefix>:status:<status>, counted in
-- <prefix>:counts and, when it has ended, added to <prefix>:done:<status> (score its
-- finished_at, else now). Once the walk reaches the end, KEYS[2] holds 'done'.
-- KEYS[1]: <prefix>:jobs   KEYS[2]: <prefix>:backfill (STRING: cursor "<ms> <id>")
-- ARGV[1]: prefix   ARGV[2]: max   ARGV[3]: now ms
-- Returns: {entries looked at, jobs indexed}; {0, 0} once done
local prefix, max, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local state = redis.call('GET', KEYS[2])
if state == 'done' then
  return { 0, 0 }
end
local start = 0
if state then
  local cs, cid = string.match(state, '^(%S+) (%S+)$')
  local r = cid and redis.call('ZRANK', KEYS[1], cid)
  if r then
    start = r + 1
  elseif cs then
    start = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. cs)
  end
end
local entries = redis.call('ZRANGE', KEYS[1], start, start + max - 1, 'WITHSCORES')
local indexed = 0
for i = 1, #entries, 2 do
  local id, score = entries[i], entries[i + 1]
  local f = redis.call('HMGET', jkey(prefix, id), 'status', 'script_type', 'finished_at')
  if f[1] and not redis.call('ZSCORE', prefix .. ':status:' .. f[1], id) then
    redis.call('ZADD', prefix .. ':status:' .. f[1], score, id)
    redis.call('HINCRBY', prefix .. ':counts', 'type:' .. (f[2] or '?'), 1)
    if f[1] == 'Finished' or f[1] == 'Error' then
      redis.call('ZADD', prefix .. ':done:' .. f[1], tonumber(f[3]) or now, id)
    end
    indexed = indexed + 1
  end
end
local seen = #entries / 2
if seen < max then
  redis.call('SET', KEYS[2], 'done')
else
  redis.call('SET', KEYS[2], entries[#entries] .. ' ' .. entries[#entries - 1])
end
return { seen, indexed }
