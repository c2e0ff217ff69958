-- Block the account after the provider said its budget is gone. A block only ever
-- moves later: a new, shorter cooldown never cuts an active one short.
--
-- KEYS[1] = block hash
-- ARGV[1] = now in ms, or '' for Redis TIME
-- ARGV[2] = block until, epoch ms
-- ARGV[3] = reason
-- ARGV[4] = extra TTL in ms kept after the block ends
-- Returns the deadline in force after the call (0 when none is active).

local now = now_ms(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], 'u') or '0')
local wanted = tonumber(ARGV[2])
if wanted > current and wanted > now then
  redis.call('HSET', KEYS[1], 'u', wanted, 'r', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], wanted - now + tonumber(ARGV[4]))
  return wanted
end
if current > now then
  return current
end
return 0
