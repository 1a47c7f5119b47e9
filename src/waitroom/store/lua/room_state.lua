-- A room's live state, for metrics and the admin API: read-only, one round trip.
--
-- KEYS[1]  the room's admission log (sorted set scored by admission time, µs)
-- KEYS[2]  the room's block: absent, or the time (µs) the block ends
-- KEYS[3]  the room's active sessions (sorted set scored by last activity, µs)
-- ARGV[1]  window (µs)
-- ARGV[2]  optional "now" (µs); empty = the server's TIME
-- ARGV[3]  session ttl (µs): sessions idle this long are not counted as active
--
-- Returns {admissions inside (now - window, now], µs the block still lasts (0 when not blocked),
--          active sessions}.

local now
if ARGV[2] ~= nil and ARGV[2] ~= "" then
  now = tonumber(ARGV[2])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local in_window = redis.call("ZCOUNT", KEYS[1], "(" .. (now - tonumber(ARGV[1])), "+inf")
local blocked_until = tonumber(redis.call("GET", KEYS[2]) or "0")
local active = redis.call("ZCOUNT", KEYS[3], "(" .. (now - tonumber(ARGV[3])), "+inf")
return {in_window, math.max(0, blocked_until - now), active}
