-- The overrides every replica re-reads each second, and the store's epoch, in one round trip.
--
-- KEYS[1]  the overrides (hash: setting -> value)
-- KEYS[2]  the epoch: a mark kept for as long as the store keeps its data (it never expires)
-- ARGV[1]  a new mark (each read sends another): written when the store has no epoch (a new store, or one
--          that came back empty), and answered
--
-- A replica that finds the epoch it knew replaced by another knows the store lost its data.
-- Returns {epoch, the overrides as a flat list: setting, value, ...}. Both keys share {admin}.

local epoch = redis.call("GET", KEYS[2])
if not epoch then
  redis.call("SET", KEYS[2], ARGV[1])
  epoch = ARGV[1]
end
return {epoch, redis.call("HGETALL", KEYS[1])}
