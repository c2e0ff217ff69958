-- Shared helpers, prepended to every limiter script when it is loaded.
--
-- Data layout of one account (every key shares the account's {hash tag}):
--   charges  HASH  request id -> "grant_ms|pr|name=cost|name=cost..." (costs in milli-units)
--   leases   ZSET  lease id   -> deadline ms (a lease is live while deadline > now)
--   block    HASH  u = until ms, r = reason
--   per window: log ZSET request id -> grant ms; use HASH t = rolling total,
--               r/a = regenerating bucket (remaining, tick anchor), p:<pr> = PR use
-- A charge counts in a window while now < grant + duration.

local INF = math.huge

local function now_ms(override)
  if override ~= '' then
    return tonumber(override)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The cost a charge record holds for one window, and the PR it belongs to.
local function charge_of(record, name)
  if not record then
    return 0, ''
  end
  local amount = tonumber(string.match(record, '|' .. name .. '=(%-?%d+)')) or 0
  return amount, string.match(record, '^[^|]*|([^|]*)')
end

-- Regenerating bucket at `now`: remaining and tick anchor. A full bucket re-anchors at
-- now, so the first tick after a spend comes one tick after that spend.
local function bucket_at(r, a, now, limit, tick, regen)
  r = tonumber(r or limit)
  a = tonumber(a or now)
  if r >= limit then
    return limit, now
  end
  local k = math.floor((now - a) / tick)
  if k > 0 then
    r = math.min(limit, r + k * regen)
    a = a + k * tick
    if r >= limit then
      return limit, now
    end
  end
  return r, a
end

-- Drop charges that left the window, taking their cost off the totals. `purge` marks
-- the longest window, after which a charge record is no longer needed.
local function trim(charges, log, use, name, kind, dur, purge, now)
  local expired = redis.call('ZRANGEBYSCORE', log, '-inf', now - dur)
  if #expired == 0 then
    return
  end
  for _, id in ipairs(expired) do
    local record = redis.call('HGET', charges, id)
    local amount, pr = charge_of(record, name)
    if kind == 'r' and amount ~= 0 then
      redis.call('HINCRBY', use, 't', -amount)
    end
    if pr and pr ~= '' and amount ~= 0 then
      if redis.call('HINCRBY', use, 'p:' .. pr, -amount) <= 0 then
        redis.call('HDEL', use, 'p:' .. pr)
      end
    end
    if purge == '1' or string.sub(id, 1, 1) == '~' then
      redis.call('HDEL', charges, id)
    end
  end
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now - dur)
end
