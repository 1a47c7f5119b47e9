-- Admissions decided while Redis was away join the room's window, so that after an outage the
-- shared window counts them and the limit holds across it: those of the `local` failure policy,
-- and the called tickets a replica let in (rooms/line.py, "Called before an outage"), which also
-- take the place their call held, inside the room as in the window.
--
-- KEYS[1]  the room's admission log (see room_admit.lua)
-- KEYS[2..6] the line (room_queue.lua): line, due back, called, joined, lapsed
-- KEYS[7]  the line's served counters (room_queue.lua): a ticket that leaves counts as "out"
-- KEYS[8]  the room's active sessions     KEYS[9]  the room's released sessions
-- KEYS[10] the room's departures record (departures.lua): the sessions idle past the ttl are noted
-- ARGV[1]  window (µs)
-- ARGV[2]  the proxy's clock (µs) when it sent this: each admission keeps its age against it
-- ARGV[3]  optional "now" (µs) for tests and flow replay; empty = the server's TIME
-- ARGV[4]  max_active (0: no cap)     ARGV[5]  session ttl (µs), for the cap
-- ARGV[6]  how many of the pairs below, from the first, are called tickets (the rest: `local`'s)
-- ARGV[7..] pairs: session id, admission time (µs, the proxy's clock)
--
-- ZADD NX: an id Redis already holds (it also got the admission) is not counted twice. A called
-- ticket leaves the line and, with a cap, is counted inside in the place its call held (never past
-- max_active, never once released: as room_touch.lua). A ticket whose call lapsed before this
-- arrived (its place went to the next) is counted in the window all the same: it did get in. A
-- ticket the line no longer holds (Redis came back empty, or it was dropped) is not counted: no
-- place was held for it here, and counting it would take one from a window already given out.
-- Returns the number of admissions added to the window.

--#include departures.lua

local now
if ARGV[3] ~= nil and ARGV[3] ~= "" then
  now = tonumber(ARGV[3])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local log, line, seen, called, joined, lapsed, served, active, released =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local window = tonumber(ARGV[1])
local sent_at = tonumber(ARGV[2])
local max_active = tonumber(ARGV[4] or "0") or 0
local ttl = tonumber(ARGV[5] or "0") or 0
local added = 0
if max_active > 0 then
  expire_idle(active, KEYS[10], now, ttl)
end
local tickets_end = 7 + 2 * (tonumber(ARGV[6] or "0") or 0)
for i = 7, #ARGV, 2 do
  local sid = ARGV[i]
  local at = math.min(now, now - (sent_at - tonumber(ARGV[i + 1])))
  local was_called = redis.call("ZSCORE", called, sid)
  local kept = redis.call("ZREM", line, sid) > 0
  if i < tickets_end and not kept then
    at = nil  -- a ticket the line no longer holds: not counted
  end
  if kept then
    redis.call("ZREM", seen, sid)
    redis.call("ZREM", called, sid)
    redis.call("HDEL", joined, sid)
    redis.call("HDEL", lapsed, sid)
    if redis.call("EXISTS", served) == 1 then
      redis.call("HINCRBY", served, "out", 1)  -- keeps the key's expiry
    end
  end
  if at and at > now - window then
    added = added + redis.call("ZADD", log, "NX", at, sid)
  end
  if was_called and max_active > 0 and not redis.call("ZSCORE", released, sid)
    and redis.call("ZCARD", active) < max_active then
    redis.call("ZADD", active, "NX", now, sid)
    redis.call("PEXPIRE", active, math.ceil(ttl / 1000) + 1000)
  end
end
if added > 0 then
  redis.call("PEXPIRE", log, math.ceil(window / 1000) + 1000)
end
return added
