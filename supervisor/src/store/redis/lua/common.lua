-- common.lua: helpers prepended to every other script (not a script of its own).
--
-- Namespaces: `prefix` (ARGV[1] of most scripts) is the key namespace of the jobs the
-- call is about: the default one (`<root>`, e.g. `hero`) or a numbered context's
-- (`<root>:{c<N>}`, one hash tag per context). Every job key, queue and index a script
-- touches is of that one namespace (a job may wait only on jobs of its own context).
-- Server-wide keys are few and named here: the event channel `<root>:events` (on a
-- cluster with sharded pub/sub, each namespace's `<prefix>:events` instead), and for
-- a numbered namespace the ready set `<root>:ready:<T>` that enqueue and claim keep
-- (see ARCHITECTURE.md "Contexts and keys" for what Redis Cluster changes about them).
-- Times are epoch milliseconds passed in ARGV by the caller (never Redis' clock).
-- `CLUSTER` (the line before this file, scripts.rs) is true on a Redis Cluster: there
-- the server-wide keys are in a slot of their own (`<root>:{s}:...`), so scripts leave
-- them alone and the caller keeps them (ready sets, `spaces`); the default namespace is
-- `<root>:{d}` there. `SHARDED` (the second line) is true on a cluster with sharded
-- pub/sub: events then go on each namespace's own channel (`publish` below).

local function jkey(prefix, id)
  return prefix .. ':job:' .. id
end

local function qkey(prefix, script_type)
  return prefix .. ':q:work:type:' .. script_type
end

-- The server-wide prefix and the context number (a string) of namespace `space`; the
-- number is nil for the default namespace.
local function split_space(space)
  local root, n = string.match(space, '^(.*):{c(%d+)}$')
  if root then
    return root, n
  end
  root = string.match(space, '^(.*):{d}$')
  if root then
    return root, nil
  end
  return space, nil
end

-- The ready queue of a job of `script_type` in namespace `prefix`.
local function ready_key(prefix, script_type)
  return qkey(prefix, script_type)
end

-- Moves `id` from the status index of `from` (nil: none) to that of `to`
-- (<prefix>:status:<status>, score created_at ms). `created` is the job's created_at
-- field when the caller read it with the status (no lookup then); when absent or not
-- an integer, the score is read from the <prefix>:jobs index.
local function restatus(prefix, id, from, to, created)
  if from == to then
    return
  end
  if from then
    redis.call('ZREM', prefix .. ':status:' .. from, id)
  end
  if type(created) ~= 'string' or not string.match(created, '^%-?%d+$') then
    created = redis.call('ZSCORE', prefix .. ':jobs', id)
  end
  if created then
    redis.call('ZADD', prefix .. ':status:' .. to, created, id)
  end
end

-- Adds to the status index of `status` the (created ms, id) pairs `pairs` (flat, maybe
-- empty) in one ZADD. A created_at that is not a number is left out, never raised on.
local function index_add(prefix, status, pairs)
  local args = {}
  for i = 1, #pairs, 2 do
    local created = tonumber(pairs[i])
    if created then
      args[#args + 1] = created
      args[#args + 1] = pairs[i + 1]
    end
  end
  if #args > 0 then
    redis.call('ZADD', prefix .. ':status:' .. status, unpack(args))
  end
end

-- Publishes `event` about namespace `prefix`: on one Redis (and a cluster without
-- sharded pub/sub) PUBLISH on the server-wide `<root>:events`; with `SHARDED` (a cluster
-- with Redis 7's sharded pub/sub) SPUBLISH on the namespace's own `<prefix>:events`,
-- which is in the script's slot (a script may SPUBLISH only there), so the event goes
-- to that slot's master and its subscribers only, not over the cluster bus to all.
local function publish(prefix, event)
  if SHARDED then
    redis.call('SPUBLISH', prefix .. ':events', cjson.encode(event))
  else
    local root = split_space(prefix)
    redis.call('PUBLISH', root .. ':events', cjson.encode(event))
  end
end

local function changed(prefix, id, status)
  publish(prefix, { k = 'job', id = id, status = status })
end

-- One event for many jobs that changed to the same status (`ids` not empty).
local function changed_many(prefix, ids, status)
  publish(prefix, { k = 'jobs', ids = ids, status = status })
end

-- Ready queues: RPUSH at the tail, LPOP from the head; `front` puts an id at the head.
-- The caller has set the job's queued_at (the next attempt's enqueue_time) to now,
-- usually in the HSET that made it Dispatched; push_ready below does it itself.
-- announce_work: jobs of `script_type` became ready in namespace `prefix`. A numbered
-- context's namespace is also entered in the server-wide ready set of the type
-- (<root>:ready:<T>), which claimers read to find the contexts with ready jobs without
-- a scan; the `work` event names the context (`c`).
local function announce_work(prefix, script_type)
  local root, n = split_space(prefix)
  if n then
    if not CLUSTER then
      redis.call('SADD', root .. ':ready:' .. script_type, n)
    end
    publish(prefix, { k = 'work', script_type = script_type, c = tonumber(n) })
  else
    publish(prefix, { k = 'work', script_type = script_type })
  end
end

-- Pushes `id` on its namespace's queue of `script_type` and announces the work.
local function enqueue(prefix, id, script_type, front)
  if front then
    redis.call('LPUSH', qkey(prefix, script_type), id)
  else
    redis.call('RPUSH', qkey(prefix, script_type), id)
  end
  announce_work(prefix, script_type)
end

-- enqueue, recording `now` as the job's queued_at first.
local function push_ready(prefix, id, script_type, front, now)
  redis.call('HSET', jkey(prefix, id), 'queued_at', now)
  enqueue(prefix, id, script_type, front)
end

-- Ends job `id` in Error (lease and schedule cleared) and announces it.
local function end_error(prefix, id, error_json, now)
  local k = jkey(prefix, id)
  restatus(prefix, id, redis.call('HGET', k, 'status') or nil, 'Error')
  redis.call('HSET', k, 'status', 'Error', 'error', error_json, 'finished_at', now, 'updated_at', now)
  redis.call('HDEL', k, 'lease_owner', 'lease_until', 'not_before')
  redis.call('ZREM', prefix .. ':leases', id)
  redis.call('ZADD', prefix .. ':done:Error', now, id)
  changed(prefix, id, 'Error')
end

local function prerequisite_failed(message)
  return cjson.encode({ type = 'prerequisite_failed', message = message })
end

-- Every job waiting on `root`, transitively, ends in Error(prerequisite_failed).
local function fail_dependents(prefix, root, now)
  local todo = { root }
  while #todo > 0 do
    local failed = table.remove(todo)
    local dkey = jkey(prefix, failed) .. ':dependents'
    local deps = redis.call('SMEMBERS', dkey)
    redis.call('DEL', dkey)
    for _, d in ipairs(deps) do
      if redis.call('HGET', jkey(prefix, d), 'status') == 'WaitingForPrerequisites' then
        end_error(prefix, d, prerequisite_failed('prerequisite ' .. failed .. ' failed'), now)
        table.insert(todo, d)
      end
    end
  end
end

-- A job's prerequisites, or nil when the stored field is not a JSON list of ids (edited
-- by hand): the caller ends such a job as corrupt instead of raising in the middle of a
-- batch, whose earlier changes would stay while the rest were never made.
local function prerequisites_of(json)
  local ok, list = pcall(cjson.decode, json or '')
  if not ok or type(list) ~= 'table' then
    return nil
  end
  for _, p in ipairs(list) do
    if type(p) ~= 'string' then
      return nil
    end
  end
  return list
end

-- Jobs waiting on `done` whose prerequisites are now all Finished become Dispatched.
local function release_dependents(prefix, done, now)
  local dkey = jkey(prefix, done) .. ':dependents'
  local deps = redis.call('SMEMBERS', dkey)
  if #deps == 0 then
    return
  end
  redis.call('DEL', dkey)
  for _, d in ipairs(deps) do
    local dk = jkey(prefix, d)
    local f = redis.call('HMGET', dk, 'status', 'prerequisites', 'script_type', 'created_at')
    local prerequisites = prerequisites_of(f[2])
    if f[1] == 'WaitingForPrerequisites' and not prerequisites then
      end_error(prefix, d, cjson.encode({ type = 'corrupt',
        message = 'its prerequisites field is not a JSON list of job ids' }), now)
      fail_dependents(prefix, d, now)
    elseif f[1] == 'WaitingForPrerequisites' then
      local ready = true
      for _, p in ipairs(prerequisites) do
        if redis.call('HGET', jkey(prefix, p), 'status') ~= 'Finished' then
          ready = false
          break
        end
      end
      if ready then
        redis.call('HSET', dk, 'status', 'Dispatched', 'updated_at', now, 'queued_at', now)
        restatus(prefix, d, 'WaitingForPrerequisites', 'Dispatched', f[4])
        changed(prefix, d, 'Dispatched')
        enqueue(prefix, d, f[3], false)
      end
    end
  end
end

-- The compare-and-set of every outcome (complete_batch.lua): nil and the job's
-- status, attempt, has_dependents, script_type and created_at when job hash `k` is
-- Started on `attempt`, else the reply to return.
local function check_started(k, attempt)
  local f = redis.call('HMGET', k, 'status', 'attempt', 'has_dependents', 'script_type', 'created_at')
  if not f[1] then
    return { 'NOT_FOUND' }
  end
  if f[1] ~= 'Started' then
    return { 'BAD_STATE', f[1] }
  end
  if f[2] ~= attempt then
    return { 'CONFLICT', f[2] }
  end
  return nil, f
end

-- Adds `ids` (not empty) to the retention index of terminal `status`
-- (<prefix>:done:<status>, score `now`): one ZADD for a batch.
local function mark_done(prefix, status, ids, now)
  local args = {}
  for _, id in ipairs(ids) do
    args[#args + 1] = now
    args[#args + 1] = id
  end
  redis.call('ZADD', prefix .. ':done:' .. status, unpack(args))
end

-- Clears the lease of job `id` (hash `k`).
local function clear_lease(prefix, k, id)
  redis.call('HDEL', k, 'lease_owner', 'lease_until')
  redis.call('ZREM', prefix .. ':leases', id)
end

