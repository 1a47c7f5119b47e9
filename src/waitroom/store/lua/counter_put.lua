-- One PUT to the request counter: the path's count and the total change together, atomically, so
-- the total always equals the sum of the paths, however many replicas write at once.
--
-- KEYS[1]  a hash: normalised path -> count
-- KEYS[2]  the total over all paths
-- ARGV[1]  the normalised path
--
-- Returns {the path's new count, the new total}.
-- Both keys share the hash tag {counter}, so the script touches one Cluster slot.

local count = redis.call("HINCRBY", KEYS[1], ARGV[1], 1)
local total = redis.call("INCR", KEYS[2])
return {count, total}
