-- start.lua: Created -> Dispatched (queued), WaitingForPrerequisites (registered as a
-- dependent of each unfinished prerequisite) or Error(prerequisite_failed).
-- KEYS[1]: <prefix>:job:<id>
-- ARGV[1]: prefix   ARGV[2]: id   ARGV[3]: now ms
-- Returns: {'OK', new status} | {'NOT_FOUND'} | {'BAD_STATE', status}
return start_job(KEYS, ARGV)
