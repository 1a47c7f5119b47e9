-- A ticket's number, included (load_lua) by the scripts that show or compare one: in the line's
-- sorted set a ticket taken before a scheduled opening is scored by a keyed hash (below 2^48), one
-- taken from it by 2^48 + the line's counter (store/memory_line.py AFTER_OPENING mirrors it).

local AFTER_OPENING = 281474976710656  -- 2^48: tickets from the counter come after every hash

-- The number a ticket shows: its place in arrival order, 0 before the opening.
local function shown(score)
  score = tonumber(score)
  return score >= AFTER_OPENING and score - AFTER_OPENING or 0
end
