-- One new visitor asks to enter a room: the whole admission decision, atomically, in one round trip.
--
-- KEYS[1]  the room's admission log: a sorted set of session ids scored by admission time (µs)
-- KEYS[2]  the room's block: absent, or the time (µs) the block ends
-- KEYS[3]  the room's active sessions: sorted set of session ids scored by their last activity (µs)
-- ARGV[1]  new_sessions: admissions allowed per window
-- ARGV[2]  window (µs)
-- ARGV[3]  block_for (µs)
-- ARGV[4]  the new session's id
-- ARGV[5]  optional "now" (µs) for deterministic tests and flow replay; empty = the server's TIME,
--          so replicas with skewed clocks still agree
-- ARGV[6]  max_active: sessions active at once (0: no cap; the active set is then not kept)
-- ARGV[7]  session ttl (µs): a session idle this long is no longer active
-- KEYS[4]  the room's departures record (departures.lua; only with max_active)
-- KEYS[5]  the room's released sessions (sorted set scored by release time, µs)
-- KEYS[6]  this client address's holds (holds.lua; only with places_per_ip)
-- ARGV[8]  places_per_ip: places one address may hold at once (0: no limit)
-- ARGV[9]  the client address's hash ("": unknown, no limit)
--
-- A session id already in the log was admitted by an earlier call whose reply the proxy gave up on
-- (a timeout after the script ran): it is admitted again, not counted twice, blocked room or not —
-- unless its session was released since, or (with max_active) is no longer counted inside (idle
-- past the ttl, its place given away): a credential that produced a session is good for that one
-- session only. Such an id is *spent*: refused, and the caller asks again as a new visitor.
--
-- A full cap refuses without starting a block: a place inside frees up when someone leaves, not
-- when the window moves.
--
-- Returns {admitted (0|1), blocked_until (µs, 0 when not blocked), block_started (0|1), now (µs)},
-- and for a refusal, what its estimate needs: {..., when the window's next place frees up (µs; now
-- when it has one), active sessions, departures, µs the departures cover, µs since the last of
-- them (0s without max_active)},
-- then why, when it is not the window, the block or the cap: 1 the address holds its places_per_ip;
-- 2 the id is spent.
-- Every key shares the hash tag {room:NAME}, so the script touches one Cluster slot.

--#include departures.lua
--#include holds.lua

local now
if ARGV[5] ~= nil and ARGV[5] ~= "" then
  now = tonumber(ARGV[5])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local window = tonumber(ARGV[2])
local new_sessions = tonumber(ARGV[1])
local block_for = tonumber(ARGV[3])
local max_active = tonumber(ARGV[6] or "0") or 0
local ttl = tonumber(ARGV[7] or "0") or 0
local places = tonumber(ARGV[8] or "0") or 0
local client = ARGV[9] or ""
local sid = ARGV[4]

-- A refusal, with what the visitor's estimate rests on.
local function refused(blocked_until, started)
  local after = "(" .. (now - window)
  local next_free = now
  local over = redis.call("ZCOUNT", KEYS[1], after, "+inf") - new_sessions
  if over >= 0 then
    local entry = redis.call("ZRANGEBYSCORE", KEYS[1], after, "+inf", "WITHSCORES", "LIMIT", over, 1)
    next_free = tonumber(entry[2] or now) + window
  end
  local reading = {0, 0, 0, 0}
  if max_active > 0 then
    reading = inside(KEYS[3], KEYS[4], now, ttl)
  end
  return {0, blocked_until, started, now, next_free, reading[1], reading[2], reading[3], reading[4]}
end

local seen = redis.call("ZSCORE", KEYS[1], sid)
if seen and tonumber(seen) > now - window then
  if redis.call("ZSCORE", KEYS[5], sid) or (max_active > 0 and not redis.call("ZSCORE", KEYS[3], sid)) then
    local reply = refused(0, 0)
    reply[10] = 2
    return reply
  end
  return {1, 0, 0, now}
end

local blocked_until = tonumber(redis.call("GET", KEYS[2]) or "0")
if now < blocked_until then
  return refused(blocked_until, 0)
end

-- The window is (now - window, now]: an admission exactly one window old no longer counts.
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now - window)
if redis.call("ZCARD", KEYS[1]) < new_sessions then
  local counted = places > 0 and client ~= ""
  if counted then
    local active = max_active > 0 and KEYS[3]
    redis.call("PEXPIRE", KEYS[6], hold_ttl(0, ttl, window))
    if holds_count(KEYS[6], false, KEYS[1], active, KEYS[5], now, window, ttl) >= places then
      local reply = refused(0, 0)
      reply[10] = 1
      return reply
    end
  end
  if max_active > 0 then
    expire_idle(KEYS[3], KEYS[4], now, ttl)
    if redis.call("ZCARD", KEYS[3]) >= max_active then
      return refused(0, 0)  -- full inside: no block
    end
    redis.call("ZADD", KEYS[3], now, sid)
    redis.call("PEXPIRE", KEYS[3], math.ceil(ttl / 1000) + 1000)
  end
  redis.call("ZADD", KEYS[1], now, sid)
  -- The log is only read within a window: let an idle room's key go.
  redis.call("PEXPIRE", KEYS[1], math.ceil(window / 1000) + 1000)
  if counted then
    hold_place(KEYS[6], sid, now, hold_ttl(0, ttl, window))
  end
  return {1, 0, 0, now}
end

if block_for <= 0 then
  return refused(0, 1)
end
blocked_until = now + block_for
redis.call("SET", KEYS[2], blocked_until, "PX", math.ceil(block_for / 1000))
return refused(blocked_until, 1)
