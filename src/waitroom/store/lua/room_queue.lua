-- One visitor of a `fifo` room asks to enter: the line and the window, atomically, in one round trip.
--
-- KEYS[1]  the room's admission log: sorted set of session ids scored by admission time (µs)
-- KEYS[2]  the line: sorted set of session ids scored by ticket number
-- KEYS[3]  due back: sorted set of the line's session ids scored by when each is due to ask again
--          (µs): its last ask plus the poll interval it was given (see "Poll intervals" below)
-- KEYS[4]  called: sorted set of the session ids whose turn has come, scored by when their grace
--          starts (µs): when the turn came, or the holder's due-back time if that is later
-- KEYS[5]  joined: hash of session id → the time (µs) it joined the line
-- KEYS[6]  the ticket counter: it expires with the line's keys and is renewed with them, so a number
--          is never given twice while any ticket of the line exists
-- KEYS[7]  the room's active sessions (sorted set scored by last activity, µs)
-- KEYS[8]  the room's departures record (departures.lua; used only with max_active)
-- KEYS[9]  lapsed: hash of session id → when its call lapsed (µs), for tickets called and not used
--          within grace that keep their number (see below); and field "" → the last ask (µs)
-- KEYS[10] the room's released sessions (sorted set scored by release time, µs)
-- KEYS[11] this client address's count of new tickets this minute (only with tickets_per_ip)
-- KEYS[12] this client address's holds (holds.lua; only with places_per_ip)
-- KEYS[13] served: hash with "calls" (tickets called, ever) and "out" (tickets that left the line,
--          ever): two counters that only grow while the line exists, for the replicas' line views
--          (rooms/line_view.py): a ticket with b uncalled tickets ahead cannot be called before
--          calls + out grew by b; and "last_called" (the highest ticket number called, ever) and
--          "last_lapsed" (the highest number whose call lapsed or was given up, ever): a ticket
--          numbered above last_lapsed and at most last_called was called and holds its place in the
--          window and the cap until it is used, so that a replica may let it in while the store is
--          away (rooms/line.py, "Called before an outage")
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
-- ARGV[13] places_per_ip: places (tickets, sessions) one address may hold at once (0: no limit)
-- ARGV[14] draws_per_ip: before the opening, the pre-queue tickets one address may hold (0: places')
-- ARGV[15] the client address's hash ("": unknown, no per-address limit)
-- ARGV[16] retry_after (µs): the head of the line's poll interval ("" or 0: every ticket is due back
--          at once, as before poll intervals)
-- ARGV[17] max_retry_after (µs): the longest poll interval given
-- ARGV[18] µs the asking replica's calls failed, up to this one (0: none): an outage it lived
--          through, counted towards nobody's abandon_after (silences.lua)
--
-- The called tickets are always the head of the line: tickets are called in order, and the line
-- only grows at its end. A called ticket holds a place of the window until it is used or lapses,
-- so the window never admits more than new_sessions, and a newcomer never passes a live ticket.
-- A lapsed call gives its place to the next in line, but the ticket keeps its number: its holder
-- (whose polls a store outage or a stalled page kept away) is called again at the next free place
-- once it asks again, never sent to the end of the line. A lapsed ticket is not called again before
-- its holder asks, and goes with abandon_after like any other.
-- Poll intervals: each waiting ticket is told when to ask again, from its place. Its turn cannot
-- come before `earliest`, the time the window frees the places of every uncalled ticket ahead of it
-- and its own if nobody ahead leaves (slot() below, a called ticket's place counted as free now,
-- since a call may lapse at any moment); it is told half of that, within [retry_after,
-- max_retry_after], so a ticket far back asks seldom and still asks again before its turn. It is
-- due back then: a ticket is abandoned when its due-back time is abandon_after past, and a called
-- ticket's grace starts at its due-back time if that comes after the call.
-- The grace waits while the store hears nobody: each ticket is due back at a known time, so when
-- nobody asks within half the grace after the first ticket due back since the last ask (or, with
-- none due, within half the grace plus max_retry_after - retry_after), they could not reach the
-- store (it was stopped, or restarted with its data, or every replica's circuit was open); the
-- replicas' batched heartbeats count as heard. The called tickets' calls move on by the silence,
-- and a whole grace at least from its end, so an outage never eats their holders' grace, and a
-- replica that let one in while the store was away (rooms/line.py) has a grace to write it back
-- before its place goes to the next (room_record.lua). And the replicas that lived through an outage say
-- so at their first ask after it (ARGV[18]): that time counts towards nobody's abandon_after
-- (silences.lua), so it never drops the tickets of holders who kept polling. (A silence alone does
-- not say it: a line whose visitors all left is silent too, and its tickets must go.)
--
-- Returns {admitted (0|1), ticket number (0 if none), position (live tickets ahead), queue length,
--          called, slot (µs), now (µs), state (0; 1: before the opening; 2: refused, too many
--          tickets from this address, slot then = µs until it may ask again, or 0: the address
--          holds its places_per_ip; 3: a spent id — a ticket used longer than grace ago, or whose
--          session was released since or (with max_active) is no longer counted inside: no ticket
--          and no second session, the caller asks again as a newcomer), then with
--          max_active: active sessions, departures, µs the departures cover, µs since the last of
--          them (see Inside in base.py)};
--          a waiting ticket's answer has, between the state and the places inside: its poll interval
--          (µs), the served counters calls and out, lapsed tickets, admissions in the window, and
--          the served marks last_called and last_lapsed, and the line's epoch (served "born": when
--          the line started, µs; a line that went and came back, or a store restarted empty, has
--          a new one, and its numbers start again).
-- Every key shares the hash tag {room:NAME}: one Cluster slot.

--#include departures.lua
--#include holds.lua
--#include silences.lua
--#include ticket_numbers.lua

local now
if ARGV[7] ~= nil and ARGV[7] ~= "" then
  now = tonumber(ARGV[7])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local log, line, seen, called, joined, counter = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local lapsed = KEYS[9]
local new_sessions = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local abandon_after = tonumber(ARGV[3])
local grace = tonumber(ARGV[4])
local sid = ARGV[5]
local max_active = tonumber(ARGV[8] or "0") or 0
local ttl = tonumber(ARGV[9] or "0") or 0
local opens_at = tonumber(ARGV[10] or "0") or 0
local retry_after = tonumber(ARGV[16] or "0") or 0
local max_retry = math.max(retry_after, tonumber(ARGV[17] or "0") or 0)
local served = KEYS[13]
-- A silence since `last` (the last ask) longer than this means nobody could reach the store: the
-- first ticket due back after `last` did not come within half the grace. With none due, half the
-- grace plus what the longest poll interval adds to the gap between two asks (a room of a few
-- far-back tickets is quiet). room_heartbeat.lua computes the same.
local function quiet(last)
  local longest = grace / 2 + (max_retry - retry_after)
  local first = redis.call("ZRANGEBYSCORE", seen, last, "+inf", "LIMIT", 0, 1, "WITHSCORES")
  if first[2] then
    return math.min(longest, tonumber(first[2]) - last + grace / 2)
  end
  return longest
end
local prequeue = now < opens_at
local hold = ARGV[6] == "1" or prequeue
local state = prequeue and 1 or 0
-- The line's keys live while anyone asks; an idle room's line goes by itself.
-- A ticket lives until its due-back time (at most max_retry_after ahead) plus abandon_after.
local line_ttl = math.ceil((max_retry + abandon_after + grace) / 1000) + 1000
local function keep()
  if served then
    redis.call("HSETNX", served, "calls", 0)  -- so that a release finds it (room_release.lua)
    redis.call("HSETNX", served, "born", now)  -- the line's epoch: its numbers count from here
  end
  for _, key in ipairs({line, seen, called, joined, lapsed, counter, served}) do
    redis.call("PEXPIRE", key, line_ttl)
  end
end

local function count(field, n)  -- a served counter grows; the key never lives without an expiry
  if n > 0 and served then
    redis.call("HINCRBY", served, field, n)
    redis.call("PEXPIRE", served, line_ttl)
  end
end

local function raise(field, n)  -- a served high-water mark (last_called, last_lapsed) grows
  if n > 0 and served and n > tonumber(redis.call("HGET", served, field) or "0") then
    redis.call("HSET", served, field, n)
    redis.call("PEXPIRE", served, line_ttl)
  end
end

local function leave(members)
  if #members > 0 then
    count("out", redis.call("ZREM", line, unpack(members)))
    redis.call("ZREM", seen, unpack(members))
    redis.call("ZREM", called, unpack(members))
    redis.call("HDEL", joined, unpack(members))
    redis.call("HDEL", lapsed, unpack(members))
  end
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
  -- A session that ended (released, or no longer counted inside: its place went to someone else)
  -- is not started again by a copy of the ticket that produced it.
  local ended = redis.call("ZSCORE", KEYS[10], sid) or (max_active > 0 and not redis.call("ZSCORE", KEYS[7], sid))
  if tonumber(admitted_at) > now - grace and not ended then  -- an earlier ask got in, but its answer was lost
    return {1, 0, 0, redis.call("ZCARD", line), redis.call("ZCARD", called), 0, now, 0}
  end
  -- A ticket used long ago (a copy of it, kept), or a session ended: no ticket, no second place.
  return {0, 0, 0, redis.call("ZCARD", line), redis.call("ZCARD", called), 0, now, 3}
end

local places = tonumber(ARGV[13] or "0") or 0
local client = ARGV[15] or ""
local holds = KEYS[12]
local counted = places > 0 and client ~= ""
local holds_ttl = hold_ttl(abandon_after + grace, ttl, window)
if counted then
  redis.call("PEXPIRE", holds, holds_ttl)  -- the address asked: its holds stay
end

local last = tonumber(redis.call("HGET", lapsed, "") or "0")
if last > 0 and now - last > grace / 2 and now - last > quiet(last) then
  local calls = redis.call("ZRANGE", called, 0, 999, "WITHSCORES")
  for i = 1, #calls, 2 do
    redis.call("ZADD", called, math.max(tonumber(calls[i + 1]) + (now - last), now), calls[i])
  end
end
redis.call("HSET", lapsed, "", now)

-- Abandoned tickets leave; called ones left unused lapse: their places go to the next in line, and
-- they keep their numbers. A bounded batch per call keeps every call short; the next calls take the
-- rest. An outage a replica reports counts towards nobody's abandon_after.
local unheard = tonumber(ARGV[18] or "0") or 0
if unheard > 0 and served then
  silence_note(served, now - unheard, now)
end
local cutoff = served and abandon_cutoff(served, now, abandon_after) or now - abandon_after
leave(redis.call("ZRANGEBYSCORE", seen, "-inf", cutoff, "LIMIT", 0, 256))
local unused = redis.call("ZRANGEBYSCORE", called, "-inf", now - grace, "LIMIT", 0, 256)
if #unused > 0 then
  redis.call("ZREM", called, unpack(unused))
  local fence = 0
  for _, member in ipairs(unused) do
    redis.call("HSET", lapsed, member, now)
    fence = math.max(fence, shown(redis.call("ZSCORE", line, member) or 0))
  end
  raise("last_lapsed", fence)
end
-- A lapsed ticket's holder is back: it may be called again, first (its number is the smallest).
redis.call("HDEL", lapsed, sid)

local in_window = redis.call("ZCARD", log)
local ncalled = redis.call("ZCARD", called)
local nlapsed = redis.call("HLEN", lapsed)
local free = new_sessions - in_window - ncalled
if max_active > 0 then  -- a place inside as well: the called tickets hold theirs already
  expire_idle(KEYS[7], KEYS[8], now, ttl)
  free = math.min(free, max_active - redis.call("ZCARD", KEYS[7]) - ncalled)
end
if not hold and free > 0 then
  -- The first uncalled tickets in order. The called ones are the head of the line, except after an
  -- operator moved a passed opening later (pre-queue tickets then sort before them): skip them.
  -- At most 1000 calls and a scan of at most 2000 members past the called ones per ask (more free
  -- places are filled by the next asks); a line with more called tickets than that scans from
  -- 1000 before their end (only a passed opening moved later puts uncalled tickets among them).
  local batch = math.min(free, 1000)
  local first = math.max(0, ncalled - 1000)
  local upto = ncalled + math.min(nlapsed + batch, 1000) + batch - 1
  local heads = redis.call("ZRANGE", line, first, upto, "WITHSCORES")
  local calls, highest = 0, 0
  for i = 1, #heads, 2 do
    local member = heads[i]
    if calls >= batch then
      break
    end
    if redis.call("ZSCORE", called, member) == false and redis.call("HEXISTS", lapsed, member) == 0 then
      -- Its grace starts when it is due back, if that is later: it was told to come back then.
      local due = tonumber(redis.call("ZSCORE", seen, member) or "0")
      redis.call("ZADD", called, math.max(now, due), member)
      ncalled = ncalled + 1
      calls = calls + 1
      highest = math.max(highest, shown(heads[i + 1]))
    end
  end
  count("calls", calls)
  raise("last_called", highest)
  free = free - calls
end
local length = redis.call("ZCARD", line)
-- The window's own free places: the cap's are the estimate's to weigh (rooms/estimate.py), from the
-- departures; counting them here too told a line held by the cap alone that it waits for the window.
local window_free = new_sessions - in_window - ncalled

-- When the place the k-th uncalled ticket will take frees up in the window: free ones now, then the
-- log's entries in the order they leave the window, then the called tickets' (entering about now).
local function slot(k, free)
  local index = k % new_sessions
  local open = math.max(0, free or window_free)
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

-- The poll interval of a ticket `position` places from the head (see "Poll intervals" above).
local lapsed_now = math.max(0, redis.call("HLEN", lapsed) - 1)  -- the field "" is no ticket
local function interval(position)
  if retry_after <= 0 then
    return 0
  end
  local earliest = 0
  if prequeue then
    earliest = opens_at - now
  elseif not hold then
    local ahead = math.max(0, position - ncalled - lapsed_now)
    -- A called ticket's place counts as free now: its call may lapse, or its holder leave, at any
    -- moment, and a ticket told to wait for it would come back after its turn.
    local free = new_sessions - in_window
    earliest = math.floor(ahead / new_sessions) * window + math.max(0, slot(ahead, free) + window - now)
  end
  return math.min(max_retry, math.max(retry_after, math.floor(earliest / 2)))
end

local function counters()
  if not served then
    return {0, 0, 0, 0, 0}
  end
  local c = redis.call("HMGET", served, "calls", "out", "last_called", "last_lapsed", "born")
  for i = 1, 5 do
    c[i] = tonumber(c[i] or "0") or 0
  end
  return c
end

-- A waiting ticket's answer, with its poll interval (the ticket is due back after it), the line's
-- counters, and the room's places inside when it has a cap.
local function waiting(reply, position)
  local every = interval(position)
  redis.call("ZADD", seen, now + every, sid)
  local c = counters()
  for _, value in ipairs({every, c[1], c[2], lapsed_now, in_window, c[3], c[4], c[5]}) do
    reply[#reply + 1] = value
  end
  if max_active > 0 then
    for _, value in ipairs(inside(KEYS[7], KEYS[8], now, ttl)) do
      reply[#reply + 1] = value
    end
  end
  return reply
end

local number = redis.call("ZSCORE", line, sid)
if number then
  if redis.call("ZSCORE", called, sid) then  -- its turn has come
    leave({sid})
    enter()
    -- With the line's marks: the replica whose ask called this ticket learns of the call at once.
    local c = counters()
    return {1, shown(number), 0, length - 1, ncalled - 1, 0, now, 0, 0, c[1], c[2], lapsed_now, in_window, c[3], c[4], c[5]}
  end
  keep()
  local position = redis.call("ZRANK", line, sid)
  return waiting({0, shown(number), position, length, ncalled, slot(position - ncalled), now, state}, position)
end

-- A newcomer: a place of any kind (a direct entry, a ticket, a pre-queue draw) only while its
-- address holds fewer than its limit.
if counted then
  local limit = places
  local draws = tonumber(ARGV[14] or "0") or 0
  if prequeue and draws > 0 then
    limit = math.min(limit, draws)
  end
  local active = max_active > 0 and KEYS[7]
  if holds_count(holds, line, log, active, KEYS[10], now, window, ttl) >= limit then
    return {0, 0, 0, length, ncalled, 0, now, 2}
  end
end

if not hold and free > 0 and ncalled == length then  -- a place, and nobody waits for one
  enter()
  if counted then
    hold_place(holds, sid, now, holds_ttl)
  end
  return {1, 0, 0, length, ncalled, 0, now, 0}
end

-- The end of the line (also a ticket that was dropped, or one from before the store lost its data),
-- unless this address has had its tickets for the minute.
local per_ip = tonumber(ARGV[12] or "0") or 0
if per_ip > 0 and client ~= "" then
  local issued = redis.call("INCR", KEYS[11])
  if issued == 1 then
    redis.call("PEXPIRE", KEYS[11], 60000)
  end
  if issued > per_ip then
    return {0, 0, 0, length, ncalled, math.max(0, redis.call("PTTL", KEYS[11])) * 1000, now, 2}
  end
end
if counted then
  hold_place(holds, sid, now, holds_ttl)
end
if prequeue then
  number = tonumber(string.sub(redis.sha1hex(ARGV[11] .. sid), 1, 12), 16)
else
  number = AFTER_OPENING + redis.call("INCR", counter)
end
redis.call("ZADD", line, number, sid)
redis.call("HSET", joined, sid, now)
keep()
local position = redis.call("ZRANK", line, sid)
return waiting({0, shown(number), position, length + 1, ncalled, slot(position - ncalled), now, state}, position)
