-- A visitor is done (the upstream's `Waitroom-Command: release`, or the leave path): its place inside
-- the room, or in the line, is free at once.
--
-- KEYS[1]  the room's active sessions     KEYS[2]  the room's released sessions
-- KEYS[3..6]  the line: line, last seen, called, joined (as in room_queue.lua)
-- KEYS[7]  the room's departures record (departures.lua): a session that was active departs now
-- KEYS[8]  the line's served counters (room_queue.lua): a ticket that leaves counts as "out", and a
--          called ticket given up raises last_lapsed to its number (its place goes to the next)
-- ARGV[1]  the session id
-- ARGV[2]  session ttl (µs): how long a released id is remembered (its cookie cannot outlive that)
-- ARGV[3]  optional "now" (µs); empty = the server's TIME
--
-- Returns 1 if the id held a place (inside or in line), else 0.

--#include departures.lua
--#include ticket_numbers.lua

local now
if ARGV[3] ~= nil and ARGV[3] ~= "" then
  now = tonumber(ARGV[3])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local sid = ARGV[1]
local ttl = tonumber(ARGV[2])
local held = redis.call("ZREM", KEYS[1], sid)
if held > 0 then
  departures_keep(KEYS[7], now, ttl)
  depart(KEYS[7], sid, now, now)
end
local number = tonumber(redis.call("ZSCORE", KEYS[3], sid) or "0")
local ticket = redis.call("ZREM", KEYS[3], sid)
held = held + ticket
if ticket > 0 and KEYS[8] and redis.call("EXISTS", KEYS[8]) == 1 then
  redis.call("HINCRBY", KEYS[8], "out", 1)  -- keeps the key's expiry
  local fence = tonumber(redis.call("HGET", KEYS[8], "last_lapsed") or "0")
  if redis.call("ZSCORE", KEYS[5], sid) and shown(number) > fence then
    redis.call("HSET", KEYS[8], "last_lapsed", shown(number))
  end
end
redis.call("ZREM", KEYS[4], sid)
redis.call("ZREM", KEYS[5], sid)
redis.call("HDEL", KEYS[6], sid)
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", now - ttl)
redis.call("ZADD", KEYS[2], now, sid)
redis.call("PEXPIRE", KEYS[2], math.ceil(ttl / 1000) + 1000)
return held > 0 and 1 or 0
