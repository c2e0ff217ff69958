-- Block the account after the provider said its budget is gone. A block only ever
-- moves later: a new, shorter cooldown never cuts an active one short.
--
-- KEYS[1] = state hash of the account
-- ARGV[1] = now in ms, or '' for Redis TIME
-- ARGV[2] = block until, epoch ms
-- ARGV[3] = reason
-- ARGV[4] = key TTL in ms
-- Returns the deadline in force after the call (0 when none is active).

local L = LIB()
local now = L.now(ARGV[1])
local gv = L.gload(redis.call('HGET', KEYS[1], 'g'))
local current = gv[2] ~= '' and gv[2] + 0 or 0
local wanted = tonumber(ARGV[2])
if wanted > current and wanted > now then
  gv[2] = string.format('%d', wanted)
  redis.call('HSET', KEYS[1], 'g', L.gsave(gv), 'b:r', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[4]), wanted - now + tonumber(ARGV[4])))
  return wanted
end
if current > now then
  return current
end
return 0
