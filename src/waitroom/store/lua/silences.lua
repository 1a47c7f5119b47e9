-- A line's silences: the outages replicas reported (their calls failed from, to), kept in the
-- served hash's "silences" field as "from to" pairs (µs), the latest first, overlapping reports
-- merged, at most SILENCES_KEPT. A ticket is abandoned after abandon_after of time the store could
-- hear it: a holder who kept polling through an outage, unheard, keeps its ticket and its number.
-- Included by room_queue.lua and room_heartbeat.lua (memory_line.py abandon_cutoff follows it).

local SILENCES_KEPT = 8

local function silences_of(served)
  local spans = {}
  for from, to in string.gmatch(redis.call("HGET", served, "silences") or "", "(%d+) (%d+)") do
    spans[#spans + 1] = {tonumber(from), tonumber(to)}
  end
  return spans
end

local function silence_note(served, from, to)
  local spans = silences_of(served)
  local latest = spans[1]
  if latest and from <= latest[2] and to >= latest[1] then  -- another replica's report of it
    spans[1] = {math.min(from, latest[1]), math.max(to, latest[2])}
  else
    table.insert(spans, 1, {from, to})
  end
  local kept = {}
  for _, span in ipairs(spans) do
    if #kept >= SILENCES_KEPT then
      break
    end
    kept[#kept + 1] = string.format("%.0f %.0f", span[1], span[2])
  end
  redis.call("HSET", served, "silences", table.concat(kept, ";"))
end

-- The due-back time at or before which a ticket is abandoned at `now`: abandon_after of heard time
-- back from now.
local function abandon_cutoff(served, now, abandon_after)
  local spans = silences_of(served)
  local left, at = abandon_after, now
  for _, span in ipairs(spans) do  -- the latest first
    local start, stop = span[1], math.min(span[2], at)
    if stop > start then
      if at - stop >= left then
        return at - left
      end
      left = left - (at - stop)
      at = start
    end
  end
  return at - left
end
