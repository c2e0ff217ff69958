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

local L = LIB()
local now = L.now(ARGV[1])
local state, log = KEYS[1], KEYS[2]
local ttl, i = TTL, tonumber(ARGV[2])
local w = WINDOWS()[i]
local used, reset_at = tonumber(ARGV[3]), tonumber(ARGV[4])
if reset_at <= now then
  return 0
end
local gv = L.gload(redis.call('HGET', state, 'g'))
local gi = w.gi
local until_ms = gv[2] ~= '' and gv[2] + 0 or 0
if w.regen == 0 then
  local others = {}
  local total, _, expired, n = L.trim(state, log, i, w.dur, w.name, now,
    gv[gi] ~= '' and gv[gi] + 0 or 0, 0, '', gv[gi + 1], others, {})
  if next(others) then
    L.flush(state, others)
  end
  if expired then
    gv[gi], gv[gi + 1] = string.format('%d', total), n
    redis.call('HSET', state, 'g', L.gsave(gv))
  end
  local delta = used - total
  if delta <= 0 then
    return 0
  end
  local id = '~sync:' .. w.name .. ':' .. now .. ':' .. used
  local at = math.min(now, reset_at - w.dur)
  if n == '' or tonumber(n) > at then
    n = at
  end
  gv[gi], gv[gi + 1] = string.format('%d', total + delta), string.format('%d', n)
  redis.call('ZADD', log, at, id)
  redis.call('HSET', state, 'g', L.gsave(gv), 'c:' .. id,
    at .. '||' .. w.name .. '=' .. delta)
else
  local r = bucket_at(gv[gi], gv[gi + 1], now, w.limit, w.tick, w.regen)
  if w.limit - used >= r then
    return 0
  end
  gv[gi], gv[gi + 1] = string.format('%d', w.limit - used), string.format('%d', reset_at - w.tick)
  redis.call('HSET', state, 'g', L.gsave(gv))
end
redis.call('PEXPIRE', state, math.max(ttl, until_ms - now + ttl))
redis.call('PEXPIRE', log, ttl)
return 1
