-- The cap's departures, included (load_lua) by the scripts that read or change a room's active set.
--
-- Every session that leaves the active set, released or idle past the ttl, is noted in the room's
-- departures record: a sorted set of session ids scored by when they left (µs), plus the member
-- "~" scored by when the record starts. It keeps DEPARTURE_HORIZON µs of departures, at most
-- DEPARTURE_BOUND of them (the oldest go first; the start then moves to the oldest kept), and
-- expires with the room's active set. What the estimate reads is {active sessions, departures in the
-- record, µs they cover} (store/base.py Inside).

local DEPARTURE_HORIZON = 300000000
local DEPARTURE_BOUND = 256
local RECORD_START = "~"

-- Start the record, or go on with it: drop what is older than the horizon, keep the key alive.
local function departures_keep(departed, now, ttl)
  local low = now - DEPARTURE_HORIZON
  local since = tonumber(redis.call("ZSCORE", departed, RECORD_START) or now)
  redis.call("ZREMRANGEBYSCORE", departed, "-inf", "(" .. low)
  redis.call("ZADD", departed, math.max(since, low), RECORD_START)
  redis.call("PEXPIRE", departed, math.ceil(math.max(DEPARTURE_HORIZON, ttl) / 1000) + 1000)
end

-- One session left at `at` (after departures_keep in the same script).
local function depart(departed, sid, at, now)
  if at < now - DEPARTURE_HORIZON then
    return
  end
  local since = tonumber(redis.call("ZSCORE", departed, RECORD_START) or at)
  redis.call("ZADD", departed, at, sid)
  if at < since then
    redis.call("ZADD", departed, at, RECORD_START)
  end
  local n = redis.call("ZCARD", departed)
  if n > DEPARTURE_BOUND + 1 then
    redis.call("ZREMRANGEBYRANK", departed, 0, n - DEPARTURE_BOUND - 1)
    local oldest = redis.call("ZRANGE", departed, 0, 0, "WITHSCORES")
    redis.call("ZADD", departed, oldest[2], RECORD_START)
  end
end

-- The sessions idle past the ttl leave the active set, each noted as leaving when its ttl ran out
-- (the newest DEPARTURE_BOUND of them: the record keeps no more).
local function expire_idle(active, departed, now, ttl)
  departures_keep(departed, now, ttl)
  local idle = redis.call(
    "ZREVRANGEBYSCORE", active, now - ttl, "-inf", "WITHSCORES", "LIMIT", 0, DEPARTURE_BOUND
  )
  for i = 1, #idle, 2 do
    depart(departed, idle[i], tonumber(idle[i + 1]) + ttl, now)
  end
  redis.call("ZREMRANGEBYSCORE", active, "-inf", now - ttl)
end

-- When the first and the last departure within the record left (idle sessions not yet dropped
-- included, as leaving when their ttl ran out); nil when there is none.
local function departures_ends(active, departed, low, now, ttl)
  local first, last = nil, nil
  local oldest = redis.call("ZRANGEBYSCORE", departed, low, "+inf", "WITHSCORES", "LIMIT", 0, 2)
  for i = 1, #oldest, 2 do
    if oldest[i] ~= RECORD_START then
      first = tonumber(oldest[i + 1])
      break
    end
  end
  local newest = redis.call("ZREVRANGEBYSCORE", departed, "+inf", low, "WITHSCORES", "LIMIT", 0, 2)
  for i = 1, #newest, 2 do
    if newest[i] ~= RECORD_START then
      last = tonumber(newest[i + 1])
      break
    end
  end
  local idle = redis.call("ZRANGEBYSCORE", active, low - ttl, now - ttl, "WITHSCORES", "LIMIT", 0, 1)
  if #idle > 0 then
    local at = tonumber(idle[2]) + ttl
    first = math.min(first or at, at)
    idle = redis.call("ZREVRANGEBYSCORE", active, now - ttl, low - ttl, "WITHSCORES", "LIMIT", 0, 1)
    last = math.max(last or at, tonumber(idle[2]) + ttl)
  end
  return first, last
end

-- {active sessions, departures within the record, µs they cover, µs since the last of them};
-- read-only: the idle sessions a next write would note count as departed already. Two departures or
-- more cover from one mean gap between them before the first (never before the record starts) to
-- now: a record that started long before anyone could leave (a young room filling up) does not
-- dilute the pace they leave at. Fewer cover the whole record. With none, no time has passed since
-- the last (0).
local function inside(active, departed, now, ttl)
  local low = now - DEPARTURE_HORIZON
  local count = redis.call("ZCOUNT", active, "(" .. (now - ttl), "+inf")
  local left = redis.call("ZCOUNT", departed, low, "+inf")
  local since = redis.call("ZSCORE", departed, RECORD_START)
  if since and tonumber(since) >= low then
    left = left - 1
  end
  left = left + redis.call("ZCOUNT", active, low - ttl, now - ttl)
  since = math.max(tonumber(since or now), low)
  local start, silent = since, 0
  if left >= 1 then
    local first, last = departures_ends(active, departed, low, now, ttl)
    silent = now - last
    if left >= 2 then
      local gap = math.floor((last - first) / (left - 1))
      start = math.max(math.min(since, first), first - gap)
    end
  end
  return {count, left, now - start, silent}
end
