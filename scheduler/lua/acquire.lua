-- Take budget for one provider request: every window, the concurrency cap, the block
-- and the PR share/reserve rule, all or nothing. A denial charges nothing.
--
-- KEYS[1] = charges hash
-- KEYS[2] = leases zset
-- KEYS[3] = block hash
-- KEYS[2 + 2i], KEYS[3 + 2i] = log zset and use hash of window i (1-based)
-- ARGV[1] = now in ms, or '' for Redis TIME
-- ARGV[2] = request id
-- ARGV[3] = PR id
-- ARGV[4] = lease id
-- ARGV[5] = lease length in ms
-- ARGV[6] = concurrency cap, 0 for uncapped
-- ARGV[7] = prefix of the lease ids that count against the cap ('' = all)
-- ARGV[8] = key TTL in ms
-- ARGV[9] = number of windows
-- ARGV[10 + 11(i-1) ...] = window i: name, kind (r = rolling, g = regenerating),
--   duration ms, cost, cap (spendable), cap outside the reserve, PR share, limit,
--   tick ms, regen per tick, purge flag (1 on the longest window)
-- Returns {1, lease id, replayed 0/1, now, remaining per window...}
--      or {0, reason, window name, retry after ms (-1 = never), now}

local now = now_ms(ARGV[1])
local charges, leases, blockkey = KEYS[1], KEYS[2], KEYS[3]
local rid, pr, lease = ARGV[2], ARGV[3], ARGV[4]
local ttl = ARGV[8]
local replay = redis.call('HGET', charges, rid)

local best_wait, best_reason, best_window = 0, '', ''
local function consider(wait, reason, window)
  if wait > best_wait then
    best_wait, best_reason, best_window = wait, reason, window
  end
end

local until_ms = tonumber(redis.call('HGET', blockkey, 'u') or '0')
if until_ms > now then
  consider(until_ms - now, 'cooldown', '')
end

-- Concurrency: the slot this request needs frees when enough leases reach their deadline.
redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
local cap = tonumber(ARGV[6])
if cap > 0 and not redis.call('ZSCORE', leases, lease) then
  local prefix = ARGV[7]
  if prefix == '' then
    local count = redis.call('ZCARD', leases)
    if count >= cap then
      local nth = redis.call('ZRANGE', leases, count - cap, count - cap, 'WITHSCORES')
      consider(tonumber(nth[2]) - now, 'concurrency', '')
    end
  else
    local live = redis.call('ZRANGE', leases, 0, -1, 'WITHSCORES')
    local deadlines = {}
    for j = 1, #live, 2 do
      if string.sub(live[j], 1, #prefix) == prefix then
        deadlines[#deadlines + 1] = tonumber(live[j + 1])
      end
    end
    if #deadlines >= cap then
      consider(deadlines[#deadlines - cap + 1] - now, 'concurrency', '')
    end
  end
end

-- When enough of the window's live charges (or of this PR's) will have expired.
local function rolling_waits(log, name, dur, need_hi, need_lo, need_share)
  local t_hi = need_hi > 0 and INF or 0
  local t_lo = need_lo > 0 and INF or 0
  local t_sh = need_share > 0 and INF or 0
  local entries = redis.call('ZRANGEBYSCORE', log, '(' .. (now - dur), '+inf', 'WITHSCORES')
  local acc, acc_pr = 0, 0
  for j = 1, #entries, 2 do
    if t_hi < INF and t_lo < INF and t_sh < INF then
      break
    end
    local amount, owner = charge_of(redis.call('HGET', charges, entries[j]), name)
    local when = tonumber(entries[j + 1]) + dur - now
    acc = acc + amount
    if t_hi == INF and acc >= need_hi then t_hi = when end
    if t_lo == INF and acc >= need_lo then t_lo = when end
    if owner == pr then
      acc_pr = acc_pr + amount
      if t_sh == INF and acc_pr >= need_share then t_sh = when end
    end
  end
  return t_hi, t_lo, t_sh
end

-- When a regenerating bucket will hold `need` more than it does now.
local function bucket_wait(r, a, need, limit, tick, regen)
  if need <= 0 then
    return 0
  end
  if r + need > limit then
    return INF
  end
  return a + math.ceil(need / regen) * tick - now
end

local n = tonumber(ARGV[9])
local windows = {}
for i = 1, n do
  local b = 10 + (i - 1) * 11
  local w = {
    name = ARGV[b], kind = ARGV[b + 1], dur = tonumber(ARGV[b + 2]),
    cost = tonumber(ARGV[b + 3]), hi = tonumber(ARGV[b + 4]), lo = tonumber(ARGV[b + 5]),
    share = tonumber(ARGV[b + 6]), limit = tonumber(ARGV[b + 7]),
    tick = tonumber(ARGV[b + 8]), regen = tonumber(ARGV[b + 9]),
    log = KEYS[2 + 2 * i], use = KEYS[3 + 2 * i],
  }
  trim(charges, w.log, w.use, w.name, w.kind, w.dur, ARGV[b + 10], now)
  local vals = redis.call('HMGET', w.use, 't', 'p:' .. pr, 'r', 'a')
  if w.kind == 'r' then
    w.used = tonumber(vals[1] or '0')
  else
    w.r, w.a = bucket_at(vals[3], vals[4], now, w.limit, w.tick, w.regen)
    w.used = w.limit - w.r
  end
  windows[i] = w
  if not replay then
    local after = w.used + w.cost
    local over = tonumber(vals[2] or '0') + w.cost > w.share
    if after > w.hi or (over and after > w.lo) then
      local t_hi, t_lo, t_sh
      if w.kind == 'r' then
        t_hi, t_lo, t_sh = rolling_waits(w.log, w.name, w.dur, after - w.hi, after - w.lo,
          tonumber(vals[2] or '0') + w.cost - w.share)
      else
        t_hi = bucket_wait(w.r, w.a, after - w.hi, w.limit, w.tick, w.regen)
        t_lo = bucket_wait(w.r, w.a, after - w.lo, w.limit, w.tick, w.regen)
        local _, _, sh = rolling_waits(w.log, w.name, w.dur, 0, 0,
          tonumber(vals[2] or '0') + w.cost - w.share)
        t_sh = sh
      end
      consider(t_hi, 'window', w.name)
      if over then
        if t_lo <= t_sh then
          consider(t_lo, 'reserve', w.name)
        else
          consider(t_sh, 'pr_share', w.name)
        end
      end
    end
  end
end

if best_wait > 0 then
  return {0, best_reason, best_window, best_wait == INF and -1 or best_wait, now}
end

local out = {1, lease, replay and 1 or 0, now}
local record = {now, pr}
for i = 1, n do
  local w = windows[i]
  if not replay then
    redis.call('ZADD', w.log, now, rid)
    if w.kind == 'r' then
      redis.call('HINCRBY', w.use, 't', w.cost)
    else
      redis.call('HSET', w.use, 'r', w.r - w.cost, 'a', w.a)
    end
    redis.call('HINCRBY', w.use, 'p:' .. pr, w.cost)
    redis.call('PEXPIRE', w.log, ttl)
    redis.call('PEXPIRE', w.use, ttl)
    record[#record + 1] = w.name .. '=' .. w.cost
    w.used = w.used + w.cost
  end
  out[#out + 1] = w.hi - w.used
end
if n > 0 and not replay then
  redis.call('HSET', charges, rid, table.concat(record, '|'))
  redis.call('PEXPIRE', charges, ttl)
end
redis.call('ZADD', leases, now + tonumber(ARGV[5]), lease)
redis.call('PEXPIRE', leases, ttl)
return out
