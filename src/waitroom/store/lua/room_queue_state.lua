-- A `fifo` room's line, for metrics and the admin API: read-only, one round trip.
--
-- KEYS[1..5]  log, line, last seen, called, joined: as in room_queue.lua
-- ARGV[1]  new_sessions
-- ARGV[2]  window (µs)
-- ARGV[3]  abandon_after (µs)
-- ARGV[4]  grace (µs)
-- ARGV[5]  optional "now" (µs); empty = the server's TIME
-- KEYS[6], KEYS[7]  the room's active sessions and departures record (departures.lua), read only
--          when ARGV[6], the session ttl (µs), is given (a room with max_active)
--
-- Tickets that room_queue.lua would drop on its next call are not counted here.
-- Returns {live tickets, live called tickets, when the oldest live ticket joined (µs, 0: none),
--          admissions in the window, slot of a newcomer (µs; see Turn.slot), now (µs), then with
--          a ttl: active sessions, departures, µs the departures cover, µs since the last of them
--          (see Inside in base.py)}.

--#include departures.lua

local now
if ARGV[5] ~= nil and ARGV[5] ~= "" then
  now = tonumber(ARGV[5])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local log, line, seen, called, joined = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local new_sessions = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local alive = "(" .. (now - tonumber(ARGV[3]))

local length = redis.call("ZCOUNT", seen, alive, "+inf")
local ncalled = redis.call("ZCOUNT", called, "(" .. (now - tonumber(ARGV[4])), "+inf")
local in_window = redis.call("ZCOUNT", log, "(" .. (now - window), "+inf")

local oldest = 0
for _, member in ipairs(redis.call("ZRANGE", line, 0, 63)) do
  local at = redis.call("ZSCORE", seen, member)
  if at and tonumber(at) > now - tonumber(ARGV[3]) then
    oldest = tonumber(redis.call("HGET", joined, member) or "0")
    break
  end
end

-- A newcomer's place: as slot() in room_queue.lua, for the ticket after the last.
local slot = now
local free = math.max(0, new_sessions - in_window - ncalled)
local index = (length - ncalled) % new_sessions
if index < free then
  slot = now - window
elseif index - free < in_window then
  local entry = redis.call("ZRANGEBYSCORE", log, "(" .. (now - window), "+inf", "WITHSCORES", "LIMIT", index - free, 1)
  slot = tonumber(entry[2] or now)
end
local reply = {length, ncalled, oldest, in_window, slot, now}
local ttl = tonumber(ARGV[6] or "0") or 0
if ttl > 0 and KEYS[7] then
  for _, value in ipairs(inside(KEYS[6], KEYS[7], now, ttl)) do
    reply[#reply + 1] = value
  end
end
return reply
