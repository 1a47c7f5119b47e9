-- What a client address holds in a room (`places_per_ip`), included by room_admit.lua and
-- room_queue.lua (store/base.py, "holds", says what counts as a place).
--
-- An address's holds: a sorted set of the session ids it was given a place under, scored by when
-- (µs), one key per address (a hash of it) under the room's hash tag. Ids are added only while the
-- address holds fewer than its limit, and every count drops the ids that are no place any more, so
-- a key never holds more than the limit; it expires hold_ttl after the address's last ask.

-- How long an address's holds are kept after its last ask (ms): the longest any of its places can
-- live without the address asking again.
local function hold_ttl(line_us, ttl_us, window_us)
  return math.ceil(math.max(line_us, ttl_us, window_us) / 1000) + 1000
end

-- The places `holds` still counts, after dropping the ids that are none any more. `line`: the line
-- (a `fifo` room) or false; `active`: the active set (a room with max_active) or false.
local function holds_count(holds, line, log, active, released, now, window, ttl)
  local live = 0
  for _, id in ipairs(redis.call("ZRANGE", holds, 0, -1)) do
    local alive = false
    if line and redis.call("ZSCORE", line, id) then
      alive = true  -- a ticket, called or not
    elseif not redis.call("ZSCORE", released, id) then
      local at
      if active then
        at = redis.call("ZSCORE", active, id)
        alive = at and tonumber(at) > now - ttl or false
      else
        at = redis.call("ZSCORE", log, id)
        alive = at and tonumber(at) > now - window or false
      end
    end
    if alive then
      live = live + 1
    else
      redis.call("ZREM", holds, id)
    end
  end
  return live
end

-- A place given to the address (the key lives hold_ttl ms from now).
local function hold_place(holds, id, now, ttl_ms)
  redis.call("ZADD", holds, now, id)
  redis.call("PEXPIRE", holds, ttl_ms)
end
