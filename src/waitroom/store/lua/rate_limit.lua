-- Every rate-limit rule that matches one request, checked and charged in one atomic step.
-- The arithmetic mirrors src/waitroom/store/algorithms.py (the embedded store runs that).
--
-- KEYS[i]  rule i's state: a hash {ws, cur, prev, f<window start>…} (sliding_window; the f fields
--          count reservations in later windows), a sorted set of request times (sliding_log), or a
--          string holding the theoretical arrival time (gcra)
-- ARGV[1]  optional "now" (µs) for deterministic tests and flow replay; empty = the server's TIME
-- then six values per rule: algorithm ("w" | "l" | "g"), limit, per (µs), burst (0 = limit),
--          shadow (0 | 1), max_delay (µs; 0 unless the rule's action is delay)
--
-- Rules are charged only when no enforcing (non-shadow) rule refuses, so a refused request costs no
-- rule anything; a shadow rule that refuses is reported and not charged. A delay rule that cannot
-- pass now but can within max_delay *reserves* the request's slot: it is charged at its wake time,
-- and the next request finds the slot taken (held requests come out in order, one per slot).
-- Returns four integers per rule: allowed (0 | 1), remaining, reset_after (µs), delay (µs; > 0: the
-- request passes after this long).

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

-- A sliding-window hash as a table: ws, cur, prev, and future[window start] = count.
local function read_window(key)
  local flat = redis.call("HGETALL", key)
  local w = {ws = 0, cur = 0, prev = 0, future = {}}
  for j = 1, #flat, 2 do
    local field, value = flat[j], tonumber(flat[j + 1])
    if field == "ws" then w.ws = value
    elseif field == "cur" then w.cur = value
    elseif field == "prev" then w.prev = value
    elseif string.sub(field, 1, 1) == "f" then w.future[tonumber(string.sub(field, 2))] = value
    end
  end
  return w
end

local function window_count(w, start, per)
  if start == w.ws then return w.cur end
  if start == w.ws - per then return w.prev end
  if start > w.ws then return w.future[start] or 0 end
  return 0
end

for i = 1, n do
  local base = 1 + (i - 1) * 6
  local algo = ARGV[base + 1]
  local limit = tonumber(ARGV[base + 2])
  local per = tonumber(ARGV[base + 3])
  local burst = tonumber(ARGV[base + 4])
  local shadow = ARGV[base + 5] == "1"
  local max_delay = tonumber(ARGV[base + 6])
  if shadow then max_delay = 0 end -- a shadow rule holds nobody
  local key = KEYS[i]
  local v = {algo = algo, limit = limit, per = per, key = key, delay = 0}

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
      local wait = tonumber(nth[2]) + per - now
      if wait <= max_delay then
        v.allowed, v.remaining, v.reset, v.delay = 1, 0, wait + per, wait
      else
        v.allowed, v.remaining, v.reset = 0, 0, wait
      end
    end

  elseif algo == "g" then
    if burst <= 0 then burst = limit end
    local interval = per / limit
    local tolerance = interval * (burst - 1)
    local tat = tonumber(redis.call("GET", key) or "0")
    if tat < now then tat = now end
    if tat - now > tolerance + 1e-3 then -- the same 1ns slack as algorithms.py, in µs
      local wait = tat - now - tolerance
      if wait <= max_delay then
        v.allowed, v.remaining, v.reset, v.delay = 1, 0, tat + interval - now, wait
        v.new_tat = tat + interval
      else
        v.allowed, v.remaining, v.reset = 0, 0, wait
      end
    else
      local new_tat = tat + interval
      local remaining = math.floor((tolerance - (new_tat - now)) / interval + 1e-9) + 1
      if remaining < 0 then remaining = 0 end
      v.allowed, v.remaining, v.reset, v.new_tat = 1, remaining, new_tat - now, new_tat
    end

  else -- "w": sliding window
    local w = read_window(key)
    local start = math.floor(now / per) * per
    v.stale = {}
    if start ~= w.ws then
      w.prev, w.cur = window_count(w, start - per, per), window_count(w, start, per)
      w.ws = start
      for b, _ in pairs(w.future) do
        if b <= start then
          w.future[b] = nil
          v.stale[#v.stale + 1] = string.format("f%d", b)
        end
      end
    end
    v.w = w
    local elapsed = now - w.ws
    local estimate = w.prev * (1 - elapsed / per) + w.cur
    if estimate + 1 <= limit then
      v.allowed, v.remaining, v.reset = 1, math.floor(limit - estimate - 1), per - elapsed
    else
      -- The earliest time one more request fits, window by window (reservations counted).
      local buckets = 3 + math.ceil(max_delay / per)
      local at = nil
      local b = w.ws
      for _ = 1, buckets do
        local before, here = window_count(w, b - per, per), window_count(w, b, per)
        if here + 1 <= limit then
          local t = b
          if before ~= 0 then t = b + per * (1 - (limit - 1 - here) / before) end
          if t < b then t = b end
          if t < now then t = now end
          if t < b + per then at = t break end
        end
        b = b + per
      end
      if at == nil then at = b end
      local wait = at - now
      if max_delay > 0 and wait <= max_delay then
        v.allowed, v.remaining, v.reset, v.delay = 1, 0, wait + per, wait
      else
        v.allowed, v.remaining, v.reset = 0, 0, wait
      end
    end
  end

  if v.allowed == 0 and not shadow then refused = true end
  verdicts[i] = v
end

local out = {}
for i = 1, n do
  local v = verdicts[i]
  local delay = math.floor(v.delay)
  if not refused and v.allowed == 1 then
    if v.algo == "l" then
      local at = now + delay
      local member = string.format("%d:%d", at, v.count)
      if delay > 0 then member = member .. ":r" end -- never the same member as a request at `at`
      redis.call("ZADD", v.key, at, member)
      redis.call("PEXPIRE", v.key, math.ceil((delay + v.per) / 1000) + 1000)
    elseif v.algo == "g" then
      redis.call("SET", v.key, string.format("%.17g", v.new_tat), "PX", math.ceil((v.new_tat - now) / 1000) + 1000)
    else
      local w = v.w
      local wake = math.floor((now + delay) / v.per) * v.per
      local fields = {"ws", string.format("%.17g", w.ws), "prev", w.prev}
      local last = w.ws
      if wake == w.ws then
        w.cur = w.cur + 1
      else
        w.future[wake] = (w.future[wake] or 0) + 1
        fields[#fields + 1] = string.format("f%d", wake)
        fields[#fields + 1] = w.future[wake]
      end
      fields[#fields + 1] = "cur"
      fields[#fields + 1] = w.cur
      for b, _ in pairs(w.future) do
        if b > last then last = b end
      end
      redis.call("HSET", v.key, unpack(fields))
      if #v.stale > 0 then redis.call("HDEL", v.key, unpack(v.stale)) end
      redis.call("PEXPIRE", v.key, math.ceil((last + 2 * v.per - now) / 1000) + 1000)
    end
  end
  out[#out + 1] = v.allowed
  out[#out + 1] = v.remaining
  out[#out + 1] = math.floor(v.reset)
  out[#out + 1] = delay
end
return out
