-- claim.lua: pop up to max ready ids (FIFO, one LPOP from the head); each becomes
-- Started, attempt + 1, with a lease (and moved from the Dispatched to the Started status
-- index, one ZREM and one ZADD for the batch). Stale entries (job deleted or not Dispatched) are
-- dropped. Needs Redis >= 6.2 (LPOP with a count).
-- In a numbered context's namespace, a queue left empty leaves the type's ready set
-- (<root>:ready:<T>), and an id of the default namespace found there (queued on a lane
-- by a version before per-context namespaces) goes to the default queue of its type.
-- KEYS[1]: <prefix>:q:work:type:<ScriptType> (LIST)   KEYS[2]: <prefix>:leases (ZSET)
-- ARGV[1]: prefix (the namespace)   ARGV[2]: max   ARGV[3]: owner   ARGV[4]: lease_until ms
-- ARGV[5]: now ms   ARGV[6]: the script type
-- ARGV[7 ..]: the names of the job fields to return (the caller's CLAIM_FIELDS, claim.rs)
-- Returns: one flat array, per claimed job in claim order: id, the new attempt, then the
-- value of each named field in the order given (nil when absent). The fields claim sets
-- itself (status, times, lease, runner) are known to the caller, so they are not sent
-- back. On a cluster (CLUSTER), in a numbered context's namespace, one more entry
-- ends the reply: 1 when the queue is empty now, else 0 (the caller keeps the ready
-- set there, see common.lua).
local prefix, owner, until_ms, now, script_type = ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local names = {}
for i = 7, #ARGV do
  names[#names + 1] = ARGV[i]
end
local root, context = split_space(prefix)
local ids = redis.call('LPOP', KEYS[1], tonumber(ARGV[2]))
local emptied = context and redis.call('LLEN', KEYS[1]) == 0
if emptied and not CLUSTER then
  redis.call('SREM', root .. ':ready:' .. script_type, context)
end
local marker = {}
if context and CLUSTER then
  marker = { emptied and 1 or 0 }
end
if not ids then
  return marker
end
local out, claimed, scores, indexed = {}, {}, {}, {}
for _, id in ipairs(ids) do
  local k = jkey(prefix, id)
  if context and not CLUSTER and string.sub(id, 15, 15) ~= '8' then
    -- A default-namespace job on a context queue (see above): not this claim's.
    enqueue(root, id, script_type, false)
    k = nil
  end
  local f = k and redis.call('HMGET', k, 'status', 'attempt', 'not_before', 'created_at', unpack(names)) or {}
  if f[1] == 'Dispatched' then
    -- Never raise on stored data: an error here would leave the rest of the popped
    -- batch out of the queue. The caller decides about a job it cannot decode.
    local attempt = tostring((tonumber(f[2]) or 0) + 1)
    redis.call('HSET', k, 'status', 'Started', 'attempt', attempt, 'started_at', now,
      'updated_at', now, 'lease_owner', owner, 'lease_until', until_ms, 'runner', owner)
    if f[3] then
      redis.call('HDEL', k, 'not_before')
    end
    indexed[#indexed + 1] = f[4]
    indexed[#indexed + 1] = id
    claimed[#claimed + 1] = id
    scores[#scores + 1] = until_ms
    scores[#scores + 1] = id
    out[#out + 1] = id
    out[#out + 1] = attempt
    for j = 1, #names do
      out[#out + 1] = f[4 + j]
    end
  end
end
if #claimed > 0 then
  redis.call('ZADD', KEYS[2], unpack(scores))
  redis.call('ZREM', prefix .. ':status:Dispatched', unpack(claimed))
  index_add(prefix, 'Started', indexed)
  changed_many(prefix, claimed, 'Started')
end
if #marker > 0 then
  out[#out + 1] = marker[1]
end
return out
