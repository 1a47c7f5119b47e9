-- Every rate-limit rule that matches one request, checked and charged in one atomic step.
-- The arithmetic mirrors src/waitroom/algorithms.py (the embedded store runs that).
--
-- KEYS[i]  rule i's state: a hash {ws, cur, prev} (sliding_window), a sorted set of request times
--          (sliding_log), or a string holding the theoretical arrival time (gcra)
-- ARGV[1]  optional "now" (µs) for deterministic tests and flow replay; empty = the server's TIME
-- then five values per rule: algorithm ("w" | "l" | "g"), limit, per (µs), burst (0 = limit),
--          shadow (0 | 1)
--
-- Rules are charged only when no enforcing (non-shadow) rule refuses, so a refused request costs no
-- rule anything; a shadow rule that refuses is reported and not charged.
-- Returns three integers per rule: allowed (0 | 1), remaining, reset_after (µs).

local now
if ARGV[1] ~= nil and ARGV[1] ~= "" then
  now = tonumber(ARGV[1])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local n = #KEYS
local verdicts = {}
local refused = false

for i = 1, n do
  local base = 1 + (i - 1) * 5
  local algo = ARGV[base + 1]
  local limit = tonumber(ARGV[base + 2])
  local per = tonumber(ARGV[base + 3])
  local burst = tonumber(ARGV[base + 4])
  local shadow = ARGV[base + 5] == "1"
  local key = KEYS[i]
  local v = {algo = algo, limit = limit, per = per, key = key}

  if algo == "l" then
    redis.call("ZREMRANGEBYSCORE", key, "-inf", now - per)
    local count = redis.call("ZCARD", key)
    v.count = count
    if count < limit then
      local oldest = redis.call("ZRANGE", key, 0, 0, "WITHSCORES")
      local reset = per
      if oldest[2] then reset = tonumber(oldest[2]) + per - now end
      v.allowed, v.remaining, v.reset = 1, limit - count - 1, reset
    else
      local nth = redis.call("ZRANGE", key, count - limit, count - limit, "WITHSCORES")
      v.allowed, v.remaining, v.reset = 0, 0, tonumber(nth[2]) + per - now
    end

  elseif algo == "g" then
    if burst <= 0 then burst = limit end
    local interval = per / limit
    local tolerance = interval * (burst - 1)
    local tat = tonumber(redis.call("GET", key) or "0")
    if tat < now then tat = now end
    if tat - now > tolerance + 1e-3 then -- the same 1ns slack as algorithms.py, in µs
      v.allowed, v.remaining, v.reset = 0, 0, tat - now - tolerance
    else
      local new_tat = tat + interval
      local remaining = math.floor((tolerance - (new_tat - now)) / interval + 1e-9) + 1
      if remaining < 0 then remaining = 0 end
      v.allowed, v.remaining, v.reset, v.new_tat = 1, remaining, new_tat - now, new_tat
    end

  else -- "w": sliding window
    local state = redis.call("HMGET", key, "ws", "cur", "prev")
    local ws, cur, prev = tonumber(state[1] or "0"), tonumber(state[2] or "0"), tonumber(state[3] or "0")
    local start = math.floor(now / per) * per
    if start ~= ws then
      if start - ws == per then prev = cur else prev = 0 end
      cur, ws = 0, start
    end
    v.ws, v.cur, v.prev = ws, cur, prev
    local elapsed = now - ws
    local estimate = prev * (1 - elapsed / per) + cur
    if estimate + 1 <= limit then
      v.allowed, v.remaining, v.reset = 1, math.floor(limit - estimate - 1), per - elapsed
    else
      local wait
      if cur + 1 <= limit and prev > 0 then
        wait = per * (1 - (limit - 1 - cur) / prev) - elapsed
        if wait < 0 then wait = 0 end
      else
        local e = 0
        if cur > 0 then e = per * (1 - (limit - 1) / cur) end
        if e < 0 then e = 0 end
        wait = (per - elapsed) + e
      end
      v.allowed, v.remaining, v.reset = 0, 0, wait
    end
  end

  if v.allowed == 0 and not shadow then refused = true end
  verdicts[i] = v
end

local out = {}
for i = 1, n do
  local v = verdicts[i]
  if not refused and v.allowed == 1 then
    if v.algo == "l" then
      redis.call("ZADD", v.key, now, string.format("%d:%d", now, v.count))
      redis.call("PEXPIRE", v.key, math.ceil(v.per / 1000) + 1000)
    elseif v.algo == "g" then
      redis.call("SET", v.key, string.format("%.17g", v.new_tat), "PX", math.ceil((v.new_tat - now) / 1000) + 1000)
    else
      redis.call("HSET", v.key, "ws", string.format("%.17g", v.ws), "cur", v.cur + 1, "prev", v.prev)
      redis.call("PEXPIRE", v.key, math.ceil(2 * v.per / 1000) + 1000)
    end
  end
  out[#out + 1] = v.allowed
  out[#out + 1] = v.remaining
  out[#out + 1] = math.floor(v.reset)
end
return out
