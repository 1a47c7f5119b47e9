-- The holders of some tickets of a `fifo` room's line are still here: each ticket still in the line
-- is due back later, as if its holder had asked (room_queue.lua's due-back set). Nobody is called.
-- A replica's line view (rooms/line_view.py) sends one such call per room per second for the polls
-- it answered without the store, and reads the line's state from the answer; the call also drops a
-- bounded batch of abandoned tickets, as room_queue.lua does, so that pruning keeps up with a crowd
-- whose polls mostly never reach the store.
--
-- KEYS[1]  the line: sorted set of session ids scored by ticket number
-- KEYS[2]  due back: sorted set of the line's session ids scored by when each is due to ask again (µs)
-- KEYS[3]  called, KEYS[4] joined, KEYS[5] the ticket counter, KEYS[6] served counters, KEYS[7]
--          lapsed, KEYS[8] the admission log: as in room_queue.lua
-- ARGV[1]  abandon_after (µs), ARGV[2] grace (µs), ARGV[3] max_retry_after (µs): the keys' expiry
-- ARGV[4]  optional "now" (µs); empty = the server's TIME
-- ARGV[5]  window (µs), to count the admissions in the window
-- ARGV[6]  retry_after (µs): with max_retry_after, how long a silence room_queue.lua takes for an
--          outage; a heartbeat within it counts as the store hearing the line's visitors
-- ARGV[7..] pairs: session id, µs from now until it is due back (0: now). A due-back time never
--          moves back, and a ticket no longer in the line is not brought back (XX).
--
-- Returns {now, live tickets, called, lapsed, admissions in the window, calls, out, then each
-- ticket's place (live tickets ahead of it) or -1 when it is no longer in the line}.
-- Every key shares the hash tag {room:NAME}.

--#include silences.lua

local now
if ARGV[4] ~= nil and ARGV[4] ~= "" then
  now = tonumber(ARGV[4])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local line, seen, called, joined, counter, served, lapsed, log =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local abandon_after = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
local max_retry = tonumber(ARGV[3] or "0") or 0
local window = tonumber(ARGV[5] or "0") or 0
local line_ttl = math.ceil((max_retry + abandon_after + grace) / 1000) + 1000

-- Whether the line was heard lately, read before this call moves any due-back time: a silence
-- longer than room_queue.lua's quiet() is an outage, left for room_queue.lua to move the calls on by.
local retry_after = tonumber(ARGV[6] or "0") or 0
local last = tonumber(redis.call("HGET", lapsed, "") or "0")
local heard = last > 0 and now > last and now - last <= grace / 2  -- no outage is that short
if last > 0 and now > last and not heard then
  local quiet = grace / 2 + math.max(0, max_retry - retry_after)
  local first = redis.call("ZRANGEBYSCORE", seen, last, "+inf", "LIMIT", 0, 1, "WITHSCORES")
  if first[2] then
    quiet = math.min(quiet, tonumber(first[2]) - last + grace / 2)
  end
  heard = now - last <= math.max(quiet, grace / 2)
end

-- Abandoned tickets leave, a bounded batch per call (room_queue.lua's leave()); not after a silence
-- that may be an outage, which the replicas that lived through it report at their next ask.
local stale = {}
if heard or last == 0 then
  stale = redis.call("ZRANGEBYSCORE", seen, "-inf", abandon_cutoff(served, now, abandon_after), "LIMIT", 0, 256)
end
if #stale > 0 then
  local gone = redis.call("ZREM", line, unpack(stale))
  redis.call("ZREM", seen, unpack(stale))
  redis.call("ZREM", called, unpack(stale))
  redis.call("HDEL", joined, unpack(stale))
  redis.call("HDEL", lapsed, unpack(stale))
  if gone > 0 and redis.call("EXISTS", served) == 1 then
    redis.call("HINCRBY", served, "out", gone)
  end
end

local ranks = {}
local kept = 0
for i = 7, #ARGV - 1, 2 do
  local sid = ARGV[i]
  local rank = redis.call("ZRANK", line, sid)
  if rank then
    redis.call("ZADD", seen, "XX", "GT", now + tonumber(ARGV[i + 1]), sid)
    kept = kept + 1
    ranks[#ranks + 1] = rank
  else
    ranks[#ranks + 1] = -1
  end
end
if kept > 0 then
  for _, key in ipairs({line, seen, called, joined, counter, served, lapsed}) do
    redis.call("PEXPIRE", key, line_ttl)
  end
  -- Visitors reached a replica that reached the store: no outage.
  if heard then
    redis.call("HSET", lapsed, "", now)
  end
end

local in_window = 0
if window > 0 then
  in_window = redis.call("ZCOUNT", log, "(" .. (now - window), "+inf")
end
local c = redis.call("HMGET", served, "calls", "out")
local reply = {
  now,
  redis.call("ZCARD", line),
  redis.call("ZCARD", called),
  math.max(0, redis.call("HLEN", lapsed) - 1),
  in_window,
  tonumber(c[1] or "0") or 0,
  tonumber(c[2] or "0") or 0,
}
for _, rank in ipairs(ranks) do
  reply[#reply + 1] = rank
end
return reply
