-- Heartbeat for a running request: push its lease deadline out, or report it lost.
--
-- KEYS[1] = leases zset
-- ARGV[1] = now in ms, or '' for Redis TIME
-- ARGV[2] = lease id
-- ARGV[3] = lease length in ms
-- ARGV[4] = key TTL in ms
-- Returns the new deadline, or 0 when the lease had expired or was released.

local now = LIB().now(ARGV[1])
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not deadline or tonumber(deadline) <= now then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return 0
end
local new_deadline = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], 'XX', new_deadline, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return new_deadline
