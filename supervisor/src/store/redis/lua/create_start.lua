-- create_start.lua: create.lua then start.lua in one call (what `run_job` does): one
-- round trip fewer, and no moment where the job exists but is not started.
-- KEYS and ARGV: create.lua's (ARGV[3], created_at ms, is start's "now").
-- Returns: create.lua's answer when it is not {'OK'}, else start.lua's.
local created = create_job(KEYS, ARGV)
if created[1] ~= 'OK' then
  return created
end
return start_job({ KEYS[1] }, { ARGV[1], ARGV[2], ARGV[3] })
