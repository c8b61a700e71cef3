-- create.lua: store a new job as Created and index it; it is recorded in each
-- prerequisite's :required_by set (what retention keeps a needed prerequisite by), in
-- the Created status index and counted per script type (<prefix>:counts). A job of a
-- numbered context's namespace enters that context in <root>:spaces (the namespaces
-- that sweeps, listings and counts go through).
-- KEYS[1]: <prefix>:job:<id> (HASH)   KEYS[2]: <prefix>:jobs (ZSET index)
-- ARGV[1]: prefix   ARGV[2]: id   ARGV[3]: created_at ms   ARGV[4]: n prerequisites
-- ARGV[5 .. 4+n]: prerequisite ids   ARGV[5+n ..]: hash field/value pairs
-- Returns: {'OK'} | {'EXISTS'} | {'PREREQ_MISSING', id}
local prefix, id = ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 1 then
  return { 'EXISTS' }
end
local n = tonumber(ARGV[4])
for i = 5, 4 + n do
  if redis.call('EXISTS', jkey(prefix, ARGV[i])) == 0 then
    return { 'PREREQ_MISSING', ARGV[i] }
  end
end
-- Every field in one HSET; the script type (for the count) is among them.
local fields, script_type = {}, '?'
for i = 5 + n, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  if ARGV[i] == 'script_type' then
    script_type = ARGV[i + 1]
  end
end
if #fields > 0 then
  redis.call('HSET', KEYS[1], unpack(fields))
end
for i = 5, 4 + n do
  redis.call('SADD', jkey(prefix, ARGV[i]) .. ':required_by', id)
end
redis.call('ZADD', KEYS[2], ARGV[3], id)
redis.call('ZADD', prefix .. ':status:Created', ARGV[3], id)
redis.call('HINCRBY', prefix .. ':counts', 'type:' .. script_type, 1)
local root, context = split_space(prefix)
if context and not CLUSTER then
  redis.call('SADD', root .. ':spaces', context)
end
return { 'OK' }
