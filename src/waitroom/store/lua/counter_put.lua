-- One PUT to the request counter: the path's count and the total change together, atomically, so
-- the total always equals the sum of the paths, however many replicas write at once.
--
-- KEYS[1]  a hash: normalised path -> count
-- KEYS[2]  the total over all paths
-- KEYS[3]  (optional) the PUT's Idempotency-Key record: "<count>:<path>" of its first answer
-- ARGV[1]  the normalised path
-- ARGV[2]  the most paths the hash may hold: a new path past it is not counted
-- ARGV[3]  how long an Idempotency-Key is remembered (milliseconds), with KEYS[3]
--
-- Returns {count, total, replayed}: replayed 0 for a new count; 1 when KEYS[3] was seen before
-- for this path (count is then the first answer's, nothing changes, total is 0); 2 when it was
-- seen for another path (nothing changes); 3 when the path is new and the hash is full (nothing
-- changes: existing paths still count, and the total stays the sum of the paths).
-- All keys share the hash tag {counter}, so the script touches one Cluster slot; the count and the
-- key's record are written by the same script, so a retry on any replica finds one or neither.

if KEYS[3] then
  local seen = redis.call("GET", KEYS[3])
  if seen then
    local sep = string.find(seen, ":", 1, true)
    if string.sub(seen, sep + 1) ~= ARGV[1] then
      return {0, 0, 2}
    end
    return {tonumber(string.sub(seen, 1, sep - 1)), 0, 1}
  end
end
if redis.call("HEXISTS", KEYS[1], ARGV[1]) == 0 and redis.call("HLEN", KEYS[1]) >= tonumber(ARGV[2]) then
  return {0, 0, 3}
end
local count = redis.call("HINCRBY", KEYS[1], ARGV[1], 1)
local total = redis.call("INCR", KEYS[2])
if KEYS[3] then
  redis.call("SET", KEYS[3], count .. ":" .. ARGV[1], "PX", ARGV[3])
end
return {count, total, 0}
