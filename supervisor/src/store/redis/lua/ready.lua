-- ready.lua: the numbered contexts with ready jobs of a type whose queue no lane routes
-- to a registered runner: where a shared claim looks beyond the default queue. Reads
-- server-wide keys only. Bounded by the number of contexts with ready jobs of the type.
-- KEYS[1]: <root>:ready:<T> (SET of context numbers)   KEYS[2]: <root>:routes (HASH)
-- ARGV[1]: the script type
-- Returns: the context numbers (strings), in no order.
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('HEXISTS', KEYS[2], n .. ':' .. ARGV[1]) == 0 then
    out[#out + 1] = n
  end
end
return out
