-- Adopt the provider's own count for one window when it is more pessimistic than ours.
-- For a rolling window the difference is booked as a PR-less charge that lasts until
-- the provider's reset; a regenerating bucket is lowered and its next tick moved there.
--
-- KEYS[1] = state hash of the account
-- KEYS[2] = charge log zset
-- ARGV[1] = now in ms, or '' for Redis TIME
-- ARGV[2] = index of the window in the plan (1-based)
-- ARGV[3] = provider's used amount, milli-units
-- ARGV[4] = provider's reset (next free) time, epoch ms
-- Returns 1 when the local view moved, 0 when ours was already as pessimistic.

local now = now_ms(ARGV[1])
local state, log = KEYS[1], KEYS[2]
local ttl, windows = TTL, WINDOWS
local w = windows[tonumber(ARGV[2])]
local used, reset_at = tonumber(ARGV[3]), tonumber(ARGV[4])
if reset_at <= now then
  return 0
end
local vals = redis.call('HMGET', state, w.f .. 'v', w.f .. 'a', w.f .. 'n', 'b:u')
if w.kind == 'r' then
  local total, _, expired, n = trim(state, log, w, now, tonumber(vals[1] or '0'), 0, '', vals[3])
  if expired then
    redis.call('HSET', state, w.f .. 'v', total, w.f .. 'n', n or '')
  end
  local delta = used - total
  if delta <= 0 then
    return 0
  end
  local id = '~sync:' .. w.name .. ':' .. now .. ':' .. used
  local at = math.min(now, reset_at - w.dur)
  if not n or n == '' or tonumber(n) > at then
    n = at
  end
  redis.call('ZADD', log, at, id)
  redis.call('HSET', state, w.f .. 'v', total + delta, w.f .. 'n', n, 'c:' .. id, at .. '||' .. w.name .. '=' .. delta)
else
  local r = bucket_at(vals[1], vals[2], now, w)
  if w.limit - used >= r then
    return 0
  end
  redis.call('HSET', state, w.f .. 'v', w.limit - used, w.f .. 'a', reset_at - w.tick)
end
redis.call('PEXPIRE', state, math.max(ttl, tonumber(vals[4] or '0') - now + ttl))
redis.call('PEXPIRE', log, ttl)
return 1
