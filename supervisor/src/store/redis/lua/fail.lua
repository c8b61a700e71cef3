-- fail.lua: CAS Started(attempt) -> Error; dependents fail transitively.
-- KEYS[1]: <prefix>:job:<id>
-- ARGV[1]: prefix   ARGV[2]: id   ARGV[3]: attempt   ARGV[4]: error JSON   ARGV[5]: now ms
-- Returns: {'OK'} | {'NOT_FOUND'} | {'BAD_STATE', status} | {'CONFLICT', attempt}
local prefix, id, now = ARGV[1], ARGV[2], ARGV[5]
local bad = check_started(KEYS[1], ARGV[3])
if bad then
  return bad
end
end_error(prefix, id, ARGV[4], now)
fail_dependents(prefix, id, now)
return { 'OK' }
