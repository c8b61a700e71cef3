-- create.lua: store a new job as Created and index it; it is recorded in each
-- prerequisite's :required_by set (what retention keeps a needed prerequisite by), in
-- the Created status index and counted per script type (<prefix>:counts). A job of a
-- numbered context's namespace enters that context in <root>:spaces (the namespaces
-- that sweeps, listings and counts go through).
-- KEYS[1]: <prefix>:job:<id> (HASH)   KEYS[2]: <prefix>:jobs (ZSET index)
-- ARGV[1]: prefix   ARGV[2]: id   ARGV[3]: created_at ms   ARGV[4]: n prerequisites
-- ARGV[5 .. 4+n]: prerequisite ids   ARGV[5+n ..]: hash field/value pairs
-- Returns: {'OK'} | {'EXISTS'} | {'PREREQ_MISSING', id}
return create_job(KEYS, ARGV)
