-- Returning visitors were active: their sessions' last activity, batched (one call per room per
-- flush, not one per request). Read by the active-visitor cap (rooms[].max_active).
--
-- KEYS[1]  the room's active sessions (sorted set scored by last activity, µs)
-- KEYS[2]  the room's released sessions (sorted set scored by release time, µs)
-- KEYS[3]  the room's departures record (departures.lua): the sessions idle past the ttl are noted
-- ARGV[1]  session ttl (µs): a session idle this long is no longer counted
-- ARGV[2]  optional "now" (µs); empty = the server's TIME
-- ARGV[3]  max_active (0: no cap)
-- ARGV[4..] pairs: session id, µs since its activity (ages, so the replica's clock does not matter)
--
-- A session still counted has its activity moved forward. One the store no longer counts (idle past
-- the ttl, or from before the cap was set) is counted again only while fewer than max_active are:
-- a note that arrives late never re-creates a place that was given to someone else, so the count
-- passes the cap under no delay of flushes, replies or event loops. A released session is never
-- counted again.
-- Returns the ids, among those given, that were released or found no place, then every id released
-- within the last RECENT_RELEASES µs (the latest RECENT_RELEASES_MAX; store/base.py): the replica
-- that sent them stops honouring their cookies, whether it noted them this time or not.

--#include departures.lua

local now
if ARGV[2] ~= nil and ARGV[2] ~= "" then
  now = tonumber(ARGV[2])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local ttl = tonumber(ARGV[1])
local max_active = tonumber(ARGV[3]) or 0
local horizon = now - ttl
expire_idle(KEYS[1], KEYS[3], now, ttl)
local gone = {}
for i = 4, #ARGV, 2 do
  local sid = ARGV[i]
  local at = now - tonumber(ARGV[i + 1])
  local current = redis.call("ZSCORE", KEYS[1], sid)
  if redis.call("ZSCORE", KEYS[2], sid) then
    gone[#gone + 1] = sid
  elseif current then
    if tonumber(current) < at then
      redis.call("ZADD", KEYS[1], at, sid)
    end
  elseif at > horizon then
    if max_active > 0 and redis.call("ZCARD", KEYS[1]) >= max_active then
      gone[#gone + 1] = sid
    else
      redis.call("ZADD", KEYS[1], at, sid)
    end
  end
end
redis.call("PEXPIRE", KEYS[1], math.ceil(ttl / 1000) + 1000)
local RECENT_RELEASES, RECENT_RELEASES_MAX = 10000000, 1000
local named = {}
for _, sid in ipairs(gone) do
  named[sid] = true
end
local recent = "(" .. (now - RECENT_RELEASES)
for _, sid in ipairs(redis.call("ZREVRANGEBYSCORE", KEYS[2], "+inf", recent, "LIMIT", 0, RECENT_RELEASES_MAX)) do
  if not named[sid] then
    gone[#gone + 1] = sid
  end
end
return gone
