-- Admissions decided while Redis was away (the `local` failure policy) join the room's window, so
-- that after an outage the shared window counts them and the limit holds across it.
--
-- KEYS[1]  the room's admission log (see room_admit.lua)
-- ARGV[1]  window (µs)
-- ARGV[2]  the proxy's clock (µs) when it sent this: each admission keeps its age against it
-- ARGV[3]  optional "now" (µs) for tests and flow replay; empty = the server's TIME
-- ARGV[4..] pairs: session id, admission time (µs, the proxy's clock)
--
-- ZADD NX: an id Redis already holds (it also got the admission) is not counted twice.
-- Returns the number of admissions added.

local now
if ARGV[3] ~= nil and ARGV[3] ~= "" then
  now = tonumber(ARGV[3])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local window = tonumber(ARGV[1])
local sent_at = tonumber(ARGV[2])
local added = 0
for i = 4, #ARGV, 2 do
  local at = now - (sent_at - tonumber(ARGV[i + 1]))
  if at > now - window then
    added = added + redis.call("ZADD", KEYS[1], "NX", at, ARGV[i])
  end
end
if added > 0 then
  redis.call("PEXPIRE", KEYS[1], math.ceil(window / 1000) + 1000)
end
return added
