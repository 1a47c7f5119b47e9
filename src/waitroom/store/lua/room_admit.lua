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
--
-- A session id already in the log was admitted by an earlier call whose reply the proxy gave up on
-- (a timeout after the script ran): it is admitted again, not counted twice, blocked room or not.
--
-- A full cap refuses without starting a block: a place inside frees up when someone leaves, not
-- when the window moves.
--
-- Returns {admitted (0|1), blocked_until (µs, 0 when not blocked), block_started (0|1), now (µs)}.
-- Both keys share the hash tag {room:NAME}, so the script touches one Cluster slot.

local now
if ARGV[5] ~= nil and ARGV[5] ~= "" then
  now = tonumber(ARGV[5])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local window = tonumber(ARGV[2])
local seen = redis.call("ZSCORE", KEYS[1], ARGV[4])
if seen and tonumber(seen) > now - window then
  return {1, 0, 0, now}
end

local blocked_until = tonumber(redis.call("GET", KEYS[2]) or "0")
if now < blocked_until then
  return {0, blocked_until, 0, now}
end

local new_sessions = tonumber(ARGV[1])
local block_for = tonumber(ARGV[3])
local max_active = tonumber(ARGV[6] or "0") or 0

-- The window is (now - window, now]: an admission exactly one window old no longer counts.
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now - window)
if redis.call("ZCARD", KEYS[1]) < new_sessions then
  if max_active > 0 then
    local ttl = tonumber(ARGV[7])
    redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", now - ttl)
    if redis.call("ZCARD", KEYS[3]) >= max_active then
      return {0, 0, 0, now}
    end
    redis.call("ZADD", KEYS[3], now, ARGV[4])
    redis.call("PEXPIRE", KEYS[3], math.ceil(ttl / 1000) + 1000)
  end
  redis.call("ZADD", KEYS[1], now, ARGV[4])
  -- The log is only read within a window: let an idle room's key go.
  redis.call("PEXPIRE", KEYS[1], math.ceil(window / 1000) + 1000)
  return {1, 0, 0, now}
end

if block_for <= 0 then
  return {0, 0, 1, now}
end
blocked_until = now + block_for
redis.call("SET", KEYS[2], blocked_until, "PX", math.ceil(block_for / 1000))
return {0, blocked_until, 1, now}
