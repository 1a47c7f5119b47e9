-- One visitor of a `fifo` room asks to enter: the line and the window, atomically, in one round trip.
--
-- KEYS[1]  the room's admission log: sorted set of session ids scored by admission time (µs)
-- KEYS[2]  the line: sorted set of session ids scored by ticket number
-- KEYS[3]  last seen: sorted set of the line's session ids scored by the time of their last ask (µs)
-- KEYS[4]  called: sorted set of the session ids whose turn has come, scored by when it came (µs)
-- KEYS[5]  joined: hash of session id → the time (µs) it joined the line
-- KEYS[6]  the ticket counter (never expires: numbers must keep growing while a line exists)
-- KEYS[7]  the room's active sessions (sorted set scored by last activity, µs)
-- KEYS[8]  optional: this client address's count of new tickets this minute
-- ARGV[1]  new_sessions: admissions allowed per window
-- ARGV[2]  window (µs)
-- ARGV[3]  abandon_after (µs): a ticket not seen for this long is dropped
-- ARGV[4]  grace (µs): a called ticket not used within this long lapses
-- ARGV[5]  the visitor's session id (from its ticket, or new)
-- ARGV[6]  "1": an operator holds the room (call nobody, admit nobody); else ""
-- ARGV[7]  optional "now" (µs); empty = the server's TIME, so replicas with skewed clocks agree
-- ARGV[8]  max_active (0: no cap)
-- ARGV[9]  session ttl (µs), for the cap
-- ARGV[10] opens_at (µs; 0: no scheduled opening): before it, nobody is called, and tickets are
--          numbered by a keyed hash of their id (ARGV[11], the event's seed), so the pre-queue is in
--          a random order that every replica computes alike; from it, 2^48 + the counter (after them)
-- ARGV[12] tickets_per_ip: new tickets per client address per minute (0: no limit)
--
-- The called tickets are always the head of the line: tickets are called in order, and the line
-- only grows at its end. A called ticket holds a place of the window until it is used or lapses,
-- so the window never admits more than new_sessions, and a newcomer never passes a live ticket.
--
-- Returns {admitted (0|1), ticket number (0 if none), position (live tickets ahead), queue length,
--          called, slot (µs), now (µs), state (0; 1: before the opening; 2: refused, too many
--          tickets from this address, slot then = µs until it may ask again; 3: a ticket used
--          longer than grace ago: no ticket, the caller asks again as a newcomer)}; see Turn in base.py.
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
local max_active = tonumber(ARGV[8] or "0") or 0
local ttl = tonumber(ARGV[9] or "0") or 0
local opens_at = tonumber(ARGV[10] or "0") or 0
local prequeue = now < opens_at
local hold = ARGV[6] == "1" or prequeue
local state = prequeue and 1 or 0
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

local AFTER_OPENING = 281474976710656  -- 2^48: tickets from the counter come after every hash
local function shown(score)  -- the number a ticket shows: its place in arrival order, 0 before the opening
  score = tonumber(score)
  return score >= AFTER_OPENING and score - AFTER_OPENING or 0
end

local function enter()
  redis.call("ZADD", log, now, sid)
  redis.call("PEXPIRE", log, math.ceil(window / 1000) + 1000)
  if max_active > 0 then
    redis.call("ZADD", KEYS[7], now, sid)
    redis.call("PEXPIRE", KEYS[7], math.ceil(ttl / 1000) + 1000)
  end
end

-- The window is (now - window, now]: an admission exactly one window old no longer counts.
redis.call("ZREMRANGEBYSCORE", log, "-inf", now - window)
local admitted_at = redis.call("ZSCORE", log, sid)
if admitted_at then
  leave({sid})
  if tonumber(admitted_at) > now - grace then  -- an earlier ask got in, but its answer was lost
    return {1, 0, 0, redis.call("ZCARD", line), redis.call("ZCARD", called), 0, now, 0}
  end
  -- A ticket used long ago (a copy of it, kept): no ticket. It gets no second place.
  return {0, 0, 0, redis.call("ZCARD", line), redis.call("ZCARD", called), 0, now, 3}
end

-- Abandoned tickets, then called ones left unused: their places go to the next in line. A bounded
-- batch per call keeps every call short; the next calls take the rest.
leave(redis.call("ZRANGEBYSCORE", seen, "-inf", now - abandon_after, "LIMIT", 0, 256))
leave(redis.call("ZRANGEBYSCORE", called, "-inf", now - grace, "LIMIT", 0, 256))

local in_window = redis.call("ZCARD", log)
local ncalled = redis.call("ZCARD", called)
local free = new_sessions - in_window - ncalled
if max_active > 0 then  -- a place inside as well: the called tickets hold theirs already
  redis.call("ZREMRANGEBYSCORE", KEYS[7], "-inf", now - ttl)
  free = math.min(free, max_active - redis.call("ZCARD", KEYS[7]) - ncalled)
end
if not hold and free > 0 then
  -- The first uncalled tickets in order. The called ones are the head of the line, except after an
  -- operator moved a passed opening later (pre-queue tickets then sort before them): skip them.
  local heads = redis.call("ZRANGE", line, 0, ncalled + math.min(free, 1000) - 1)
  for _, member in ipairs(heads) do
    if free <= 0 then
      break
    end
    if redis.call("ZADD", called, "NX", now, member) == 1 then
      ncalled = ncalled + 1
      free = free - 1
    end
  end
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
    return {1, shown(number), 0, length - 1, ncalled - 1, 0, now, 0}
  end
  redis.call("ZADD", seen, now, sid)
  keep()
  local position = redis.call("ZRANK", line, sid)
  return {0, shown(number), position, length, ncalled, slot(position - ncalled), now, state}
end

if not hold and free > 0 and ncalled == length then  -- a place, and nobody waits for one
  enter()
  return {1, 0, 0, length, ncalled, 0, now, 0}
end

-- The end of the line (also a ticket that was dropped, or one from before the store lost its data),
-- unless this address has had its tickets for the minute.
local per_ip = tonumber(ARGV[12] or "0") or 0
if per_ip > 0 and KEYS[8] then
  local issued = redis.call("INCR", KEYS[8])
  if issued == 1 then
    redis.call("PEXPIRE", KEYS[8], 60000)
  end
  if issued > per_ip then
    return {0, 0, 0, length, ncalled, math.max(0, redis.call("PTTL", KEYS[8])) * 1000, now, 2}
  end
end
if prequeue then
  number = tonumber(string.sub(redis.sha1hex(ARGV[11] .. sid), 1, 12), 16)
else
  number = AFTER_OPENING + redis.call("INCR", counter)
end
redis.call("ZADD", line, number, sid)
redis.call("ZADD", seen, now, sid)
redis.call("HSET", joined, sid, now)
keep()
local position = redis.call("ZRANK", line, sid)
return {0, shown(number), position, length + 1, ncalled, slot(position - ncalled), now, state}
