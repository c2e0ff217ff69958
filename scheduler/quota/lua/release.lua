-- Free a concurrency slot when the provider call has ended.
--
-- KEYS[1] = leases zset
-- ARGV[1] = now in ms, or '' for Redis TIME
-- ARGV[2] = lease id
-- Returns {live, now}: live is 1 when the lease was still live, 0 when it had already
-- expired or gone; now is the release's time on this clock (for the grant trace).

local now = LIB().now(ARGV[1])
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[2])
if deadline and tonumber(deadline) > now then
  return {1, now}
end
return {0, now}
