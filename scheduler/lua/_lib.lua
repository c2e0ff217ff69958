-- Shared helpers, prepended to every limiter script when it is loaded.
--
-- Data layout of one account (all keys share the account's {hash tag}):
--   state  HASH  b:u / b:r           block until (ms) and reason
--                w:<w>:v             rolling: the window's total; regenerating: the
--                                    bucket's remaining amount
--                w:<w>:a             regenerating: the bucket's tick anchor
--                w:<w>:n             grant time of the oldest charge still in <w>'s
--                                    totals (absent: none); older ones were trimmed
--                w:<w>:p:<pr>        the PR's use in window <w>
--                c:<request id>      charge record "grant_ms|pr|<w>=cost|<w>=cost..."
--                x                   when the keys' TTLs were last refreshed
--   log    ZSET  request id -> grant ms, one log for every window of the plan
--   leases ZSET  lease id   -> deadline ms (live while deadline > now)
-- Amounts are integer milli-units. A charge counts in a window while now < grant + D.
--
-- The plan's static numbers are not arguments: `Limiter` prepends them to each script
-- as Lua literals (TTL, CAP and WINDOWS, one table per window with name, kind, dur,
-- hi, lo, share, limit, tick, regen, purge and the field prefix f), so each plan has
-- its own script SHA and no call pays for encoding or parsing them.

local INF = math.huge

local function now_ms(override)
  if override ~= '' then
    return tonumber(override)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A charge record is forgotten once its charge has left the plan's longest window,
-- even before a trim has removed it: settle, refund and replays must not see it.
local function live_record(record, now, windows)
  if not record then
    return false
  end
  for _, w in ipairs(windows) do
    if w.purge and tonumber(string.match(record, '^([^|]*)')) <= now - w.dur then
      return false
    end
  end
  return record
end

-- The cost a charge record holds for one window, and the PR it belongs to.
local function charge_of(record, name)
  if not record then
    return 0, ''
  end
  local amount = tonumber(string.match(record, '|' .. name .. '=(%-?%d+)')) or 0
  return amount, string.match(record, '^[^|]*|([^|]*)')
end

-- Regenerating bucket at `now`. A full bucket re-anchors at now, so the first tick
-- after a spend comes one tick after that spend.
local function bucket_at(r, a, now, w)
  r = tonumber(r or w.limit)
  a = tonumber(a or now)
  if r >= w.limit then
    return w.limit, now
  end
  local k = math.floor((now - a) / w.tick)
  if k > 0 then
    r = math.min(w.limit, r + k * w.regen)
    a = a + k * w.tick
    if r >= w.limit then
      return w.limit, now
    end
  end
  return r, a
end

-- Take charges that left window `w` off its totals, if any are due (`n` is the grant
-- time of the oldest charge still counted). `own` is the calling PR's use, kept in
-- memory and written back by the caller; other PRs are updated in place.
-- Returns the rolling total, the caller PR's use, the expired entries (nil if nothing
-- was due) and the new `n` (false when no charge is left in the totals).
local function trim(state, log, w, now, total, own, pr, n)
  local cutoff = now - w.dur
  if not n or n == '' or tonumber(n) > cutoff then
    return total, own, nil, n
  end
  local expired = redis.call('ZRANGEBYSCORE', log, n, cutoff, 'WITHSCORES')
  for j = 1, #expired, 2 do
    local amount, owner = charge_of(redis.call('HGET', state, 'c:' .. expired[j]), w.name)
    total = total - amount
    if owner == pr then
      own = own - amount
    elseif owner ~= '' and amount ~= 0 then
      if redis.call('HINCRBY', state, w.f .. 'p:' .. owner, -amount) <= 0 then
        redis.call('HDEL', state, w.f .. 'p:' .. owner)
      end
    end
  end
  local next_entry = redis.call('ZRANGEBYSCORE', log, '(' .. cutoff, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return total, own, expired, next_entry[2] or false
end

-- Forget charges that left the plan's longest window: no window needs them any more.
local function purge(state, log, expired, cutoff)
  if #expired == 0 then
    return
  end
  local fields = {}
  for j = 1, #expired, 2 do
    fields[#fields + 1] = 'c:' .. expired[j]
    if #fields == 500 then -- unpack() has a stack limit; a week-long idle gap is large
      redis.call('HDEL', state, unpack(fields))
      fields = {}
    end
  end
  if #fields > 0 then
    redis.call('HDEL', state, unpack(fields))
  end
  redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
end
