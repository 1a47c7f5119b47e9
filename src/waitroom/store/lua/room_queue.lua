-- One visitor of a `fifo` room asks to enter: the line and the window, atomically, in one round trip.
--
-- KEYS[1]  the room's admission log: sorted set of session ids scored by admission time (µs)
-- KEYS[2]  the line: sorted set of session ids scored by ticket number
-- KEYS[3]  last seen: sorted set of the line's session ids scored by the time of their last ask (µs)
-- KEYS[4]  called: sorted set of the session ids whose turn has come, scored by when it came (µs)
-- KEYS[5]  joined: hash of session id → the time (µs) it joined the line
-- KEYS[6]  the ticket counter (never expires: numbers must keep growing while a line exists)
-- ARGV[1]  new_sessions: admissions allowed per window
-- ARGV[2]  window (µs)
-- ARGV[3]  abandon_after (µs): a ticket not seen for this long is dropped
-- ARGV[4]  grace (µs): a called ticket not used within this long lapses
-- ARGV[5]  the visitor's session id (from its ticket, or new)
-- ARGV[6]  "1": an operator holds the room (call nobody, admit nobody); else ""
-- ARGV[7]  optional "now" (µs); empty = the server's TIME, so replicas with skewed clocks agree
--
-- The called tickets are always the head of the line: tickets are called in order, and the line
-- only grows at its end. A called ticket holds a place of the window until it is used or lapses,
-- so the window never admits more than new_sessions, and a newcomer never passes a live ticket.
--
-- Returns {admitted (0|1), ticket number (0 if none), position (live tickets ahead), queue length,
--          called, slot (µs), now (µs)}; see Turn in store/base.py.
-- Every key shares the hash tag {room:NAME}: one Cluster slot.

local now
if ARGV[7] ~= nil and ARGV[7] ~= "" then
  now = tonumber(ARGV[7])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local log, line, seen, called, joined, counter = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local new_sessions = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local abandon_after = tonumber(ARGV[3])
local grace = tonumber(ARGV[4])
local sid = ARGV[5]
local hold = ARGV[6] == "1"
-- The line's keys live while anyone asks; an idle room's line goes by itself.
local line_ttl = math.ceil((abandon_after + grace) / 1000) + 1000
local function keep()
  for _, key in ipairs({line, seen, called, joined}) do
    redis.call("PEXPIRE", key, line_ttl)
  end
end

local function leave(members)
  if #members > 0 then
    redis.call("ZREM", line, unpack(members))
    redis.call("ZREM", seen, unpack(members))
    redis.call("ZREM", called, unpack(members))
    redis.call("HDEL", joined, unpack(members))
  end
end

local function enter()
  redis.call("ZADD", log, now, sid)
  redis.call("PEXPIRE", log, math.ceil(window / 1000) + 1000)
end

-- The window is (now - window, now]: an admission exactly one window old no longer counts.
redis.call("ZREMRANGEBYSCORE", log, "-inf", now - window)
if redis.call("ZSCORE", log, sid) then  -- admitted by an earlier ask whose answer was lost
  leave({sid})
  return {1, 0, 0, redis.call("ZCARD", line), redis.call("ZCARD", called), 0, now}
end

-- Abandoned tickets, then called ones left unused: their places go to the next in line. A bounded
-- batch per call keeps every call short; the next calls take the rest.
leave(redis.call("ZRANGEBYSCORE", seen, "-inf", now - abandon_after, "LIMIT", 0, 256))
leave(redis.call("ZRANGEBYSCORE", called, "-inf", now - grace, "LIMIT", 0, 256))

local in_window = redis.call("ZCARD", log)
local ncalled = redis.call("ZCARD", called)
local free = new_sessions - in_window - ncalled
if not hold and free > 0 then
  local heads = redis.call("ZRANGE", line, ncalled, ncalled + math.min(free, 1000) - 1)
  for _, member in ipairs(heads) do
    redis.call("ZADD", called, now, member)
  end
  ncalled = ncalled + #heads
  free = free - #heads
end
local length = redis.call("ZCARD", line)

-- When the place the k-th uncalled ticket will take frees up: free ones now, then the log's
-- entries in the order they leave the window, then the called tickets' (entering about now).
local function slot(k)
  local index = k % new_sessions
  local open = math.max(0, free)
  if index < open then
    return now - window
  end
  index = index - open
  if index < in_window then
    local entry = redis.call("ZRANGE", log, index, index, "WITHSCORES")
    return tonumber(entry[2])
  end
  return now
end

local number = redis.call("ZSCORE", line, sid)
if number then
  if redis.call("ZSCORE", called, sid) then  -- its turn has come
    leave({sid})
    enter()
    return {1, tonumber(number), 0, length - 1, ncalled - 1, 0, now}
  end
  redis.call("ZADD", seen, now, sid)
  keep()
  local position = redis.call("ZRANK", line, sid)
  return {0, tonumber(number), position, length, ncalled, slot(position - ncalled), now}
end

if not hold and free > 0 and ncalled == length then  -- a place, and nobody waits for one
  enter()
  return {1, 0, 0, length, ncalled, 0, now}
end

-- The end of the line (also a ticket that was dropped, or one from before the store lost its data).
number = redis.call("INCR", counter)
redis.call("ZADD", line, number, sid)
redis.call("ZADD", seen, now, sid)
redis.call("HSET", joined, sid, now)
keep()
return {0, number, length, length + 1, ncalled, slot(length - ncalled), now}
