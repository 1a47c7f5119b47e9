-- Returning visitors were active: their sessions' last activity, batched (one call per room per
-- flush, not one per request). Read by the active-visitor cap (rooms[].max_active).
--
-- KEYS[1]  the room's active sessions (sorted set scored by last activity, µs)
-- KEYS[2]  the room's released sessions (sorted set scored by release time, µs)
-- ARGV[1]  session ttl (µs)
-- ARGV[2]  optional "now" (µs); empty = the server's TIME
-- ARGV[3..] pairs: session id, µs since its activity (ages, so the replica's clock does not matter)
--
-- A released session is not made active again: its id is returned, and the replica that sent it
-- stops honouring its cookie. Any other session is counted (again) as active.
-- Returns the ids of released sessions among those given.

local now
if ARGV[2] ~= nil and ARGV[2] ~= "" then
  now = tonumber(ARGV[2])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local ttl = tonumber(ARGV[1])
local gone = {}
for i = 3, #ARGV, 2 do
  local sid = ARGV[i]
  if redis.call("ZSCORE", KEYS[2], sid) then
    gone[#gone + 1] = sid
  else
    local at = now - tonumber(ARGV[i + 1])
    local current = redis.call("ZSCORE", KEYS[1], sid)
    if not current or tonumber(current) < at then
      redis.call("ZADD", KEYS[1], at, sid)
    end
  end
end
redis.call("PEXPIRE", KEYS[1], math.ceil(ttl / 1000) + 1000)
return gone
