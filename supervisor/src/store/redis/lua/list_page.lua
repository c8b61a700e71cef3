-- list_page.lua: one page of list_jobs, in (created_at, id) order: the index entries
-- after the cursor (at most `budget` looked at), the jobs among them that match the
-- filter (at most `limit`).
-- KEYS[1]: the index: <prefix>:jobs, or <prefix>:status:<status> (ZSET, score created ms)
-- ARGV[1]: prefix   ARGV[2]: cursor created ms ('' for the start)   ARGV[3]: cursor id
-- ARGV[4]: lowest score ('-inf' or ms)   ARGV[5]: highest score ('+inf' or ms)
-- ARGV[6]: limit   ARGV[7]: budget   ARGV[8]: status ('' any)   ARGV[9]: script type ('' any)
-- ARGV[10]: context id ('' any)   ARGV[11]: caller id ('' any)
-- ARGV[12 ..]: the names of the job fields to return
-- Returns: {next created ms or '', next id or '', entries looked at, then per job: id and the value of each
-- named field in order (false when absent)}. A next position is given when the page
-- stopped at its limit or budget; the next call starts after it.
local prefix, cs, cid = ARGV[1], ARGV[2], ARGV[3]
local limit, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
local want = { ARGV[8], ARGV[9], ARGV[10], ARGV[11] }
local names = { 'status', 'script_type', 'context_id', 'caller_id' }
for i = 12, #ARGV do
  names[#names + 1] = ARGV[i]
end
local key = KEYS[1]

-- Where to start: after the cursor, whether or not its job is still in this index.
local start = 0
if cs ~= '' then
  local r = redis.call('ZRANK', key, cid)
  if r and tonumber(redis.call('ZSCORE', key, cid)) == tonumber(cs) then
    start = r + 1
  else
    start = redis.call('ZCOUNT', key, '-inf', '(' .. cs)
    -- Entries created in the same millisecond sort by id (a bounded run).
    local same = redis.call('ZRANGE', key, cs, cs, 'BYSCORE', 'LIMIT', 0, 10000)
    for _, m in ipairs(same) do
      if m <= cid then
        start = start + 1
      else
        break
      end
    end
  end
end
if ARGV[4] ~= '-inf' then
  local low = redis.call('ZCOUNT', key, '-inf', '(' .. ARGV[4])
  if low > start then
    start = low
  end
end
local high = tonumber(ARGV[5]) or math.huge

local out = { '', '', 0 }
local found, seen = 0, 0
while true do
  local chunk = math.min(budget - seen, 200)
  local entries = redis.call('ZRANGE', key, start, start + chunk - 1, 'WITHSCORES')
  if #entries == 0 then
    return out
  end
  for i = 1, #entries, 2 do
    local id, score = entries[i], entries[i + 1]
    if tonumber(score) > high then
      return out
    end
    seen = seen + 1
    out[3] = seen
    local f = redis.call('HMGET', jkey(prefix, id), unpack(names))
    local match = f[1] ~= false
    for j = 1, 4 do
      if want[j] ~= '' and f[j] ~= want[j] then
        match = false
      end
    end
    if match then
      out[#out + 1] = id
      for j = 1, #names do
        out[#out + 1] = f[j]
      end
      found = found + 1
    end
    if found >= limit or seen >= budget then
      out[1], out[2] = score, id
      return out
    end
  end
  start = start + #entries / 2
end
