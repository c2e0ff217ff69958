-- Adopt the provider's own count for one window when it is more pessimistic than ours.
-- The difference is booked as a charge that lasts until the provider's reset time.
--
-- KEYS[1] = charges hash
-- KEYS[2] = log zset of the window
-- KEYS[3] = use hash of the window
-- ARGV[1] = now in ms, or '' for Redis TIME
-- ARGV[2] = window name
-- ARGV[3] = kind (r|g)
-- ARGV[4] = duration ms
-- ARGV[5] = limit
-- ARGV[6] = tick ms
-- ARGV[7] = regen per tick
-- ARGV[8] = purge flag (1 on the plan's longest window)
-- ARGV[9] = provider's used amount, milli-units
-- ARGV[10] = provider's reset (next free) time, epoch ms
-- ARGV[11] = key TTL in ms
-- Returns 1 when the local view moved, 0 when ours was already as pessimistic.

local now = now_ms(ARGV[1])
local charges, log, use = KEYS[1], KEYS[2], KEYS[3]
local name, kind, dur, limit = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local used, reset_at, ttl = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]
if reset_at <= now then
  return 0
end
trim(charges, log, use, name, kind, dur, ARGV[8], now)
if kind == 'r' then
  local delta = used - tonumber(redis.call('HGET', use, 't') or '0')
  if delta <= 0 then
    return 0
  end
  local id = '~sync:' .. name .. ':' .. now .. ':' .. used
  redis.call('ZADD', log, math.min(now, reset_at - dur), id)
  redis.call('HINCRBY', use, 't', delta)
  redis.call('HSET', charges, id, now .. '||' .. name .. '=' .. delta)
else
  local tick, regen = tonumber(ARGV[6]), tonumber(ARGV[7])
  local vals = redis.call('HMGET', use, 'r', 'a')
  local r = bucket_at(vals[1], vals[2], now, limit, tick, regen)
  if limit - used >= r then
    return 0
  end
  redis.call('HSET', use, 'r', limit - used, 'a', reset_at - tick)
end
redis.call('PEXPIRE', log, ttl)
redis.call('PEXPIRE', use, ttl)
redis.call('PEXPIRE', charges, ttl)
return 1
