-- Take budget for one provider request: every window, the concurrency cap, the block
-- and the PR share/reserve rule, all or nothing. A denial charges nothing.
--
-- KEYS[1] = state hash of the account
-- KEYS[2] = charge log zset
-- KEYS[3] = leases zset
-- ARGV[1] = now in ms, or '' for Redis TIME
-- ARGV[2] = request id
-- ARGV[3] = PR id
-- ARGV[4] = lease id
-- ARGV[5] = lease length in ms
-- ARGV[6] = prefix of the lease ids that count against the cap ('' = all)
-- ARGV[7] = cost per window, "c" for all or "c1,c2,..." in plan order
-- Returns "1|replayed|now|remaining,..." or "0|reason|window|retry after ms (-1 never)|now"

local now = now_ms(ARGV[1])
local state, log, leases = KEYS[1], KEYS[2], KEYS[3]
local rid, pr, lease = ARGV[2], ARGV[3], ARGV[4]
local ttl, cap, windows = TTL, CAP, WINDOWS

local fields = {'b:u', 'c:' .. rid, 'x'}
for _, w in ipairs(windows) do
  local f = w.f
  w.at = #fields -- this window's fields follow: v, n, p:<pr>, then a if regenerating
  fields[w.at + 1] = f .. 'v'
  fields[w.at + 2] = f .. 'n'
  fields[w.at + 3] = f .. 'p:' .. pr
  if w.kind == 'g' then
    fields[w.at + 4] = f .. 'a'
  end
end
local vals = redis.call('HMGET', state, unpack(fields))
-- A stale record is trimmed and purged below, before the new charge is written.
local replay = live_record(vals[2], now, windows)

local costs = {}
for c in string.gmatch(ARGV[7], '[^,]+') do
  costs[#costs + 1] = tonumber(c)
end

local best_wait, best_reason, best_window = 0, '', ''
local function consider(wait, reason, window)
  if wait > best_wait then
    best_wait, best_reason, best_window = wait, reason, window
  end
end

local until_ms = tonumber(vals[1] or '0')
if until_ms > now then
  consider(until_ms - now, 'cooldown', '')
end

-- Concurrency: the slot this request needs frees when enough leases reach their
-- deadline. Leases of crashed workers are swept here, so they never pile up.
-- A request whose own lease is still live (a replay) keeps its slot.
redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
local leases_new = cap == 0 -- uncapped: the set was not looked at, so it may be new
if cap > 0 then
  local prefix = ARGV[6]
  if prefix == '' then
    local count = redis.call('ZCARD', leases)
    leases_new = count == 0
    if count >= cap and not redis.call('ZSCORE', leases, lease) then
      local nth = redis.call('ZRANGE', leases, count - cap, count - cap, 'WITHSCORES')
      consider(tonumber(nth[2]) - now, 'concurrency', '')
    end
  else
    local live = redis.call('ZRANGE', leases, 0, -1, 'WITHSCORES')
    leases_new = #live == 0
    local deadlines, held = {}, false
    for j = 1, #live, 2 do
      held = held or live[j] == lease
      if string.sub(live[j], 1, #prefix) == prefix then
        deadlines[#deadlines + 1] = tonumber(live[j + 1])
      end
    end
    if #deadlines >= cap and not held then
      consider(deadlines[#deadlines - cap + 1] - now, 'concurrency', '')
    end
  end
end

-- When enough of the window's live charges (or of this PR's) will have expired.
local function rolling_waits(w, need_hi, need_lo, need_share)
  local t_hi = need_hi > 0 and INF or 0
  local t_lo = need_lo > 0 and INF or 0
  local t_sh = need_share > 0 and INF or 0
  local entries = redis.call('ZRANGEBYSCORE', log, '(' .. (now - w.dur), '+inf', 'WITHSCORES')
  local acc, acc_pr = 0, 0
  for j = 1, #entries, 2 do
    if t_hi < INF and t_lo < INF and t_sh < INF then
      break
    end
    local amount, owner = charge_of(redis.call('HGET', state, 'c:' .. entries[j]), w.name)
    local when = tonumber(entries[j + 1]) + w.dur - now
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
local function bucket_wait(w, need)
  if need <= 0 then
    return 0
  end
  if w.r + need > w.limit then
    return INF
  end
  return w.a + math.ceil(need / w.regen) * w.tick - now
end

local function check(w)
  local after = w.used + w.cost
  local over = w.own + w.cost > w.share
  if after <= w.hi and not (over and after > w.lo) then
    return
  end
  local t_hi, t_lo, t_sh
  if w.kind == 'r' then
    t_hi, t_lo, t_sh = rolling_waits(w, after - w.hi, after - w.lo, w.own + w.cost - w.share)
  else -- the bucket sets the window's waits; the log still holds the PR's own use
    t_hi, t_lo = bucket_wait(w, after - w.hi), bucket_wait(w, after - w.lo)
    local _, _, sh = rolling_waits(w, 0, 0, w.own + w.cost - w.share)
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

local updates, purged = {}, nil
for i, w in ipairs(windows) do
  local b = w.at
  local expired
  w.total, w.own, expired, w.n = trim(state, log, w, now, tonumber(vals[b + 1] or '0'),
    tonumber(vals[b + 3] or '0'), pr, vals[b + 2])
  if expired then
    updates[#updates + 1] = w.f .. 'n'
    updates[#updates + 1] = w.n or ''
    if w.kind == 'r' then
      updates[#updates + 1] = w.f .. 'v'
      updates[#updates + 1] = w.total
    end
    w.own_moved = true
    if w.purge then
      purged = expired
    end
  end
  if w.kind == 'r' then
    w.used = w.total
  else
    w.r, w.a = bucket_at(vals[b + 1], vals[b + 4], now, w)
    w.used = w.limit - w.r
  end
  w.cost = costs[i] or costs[1]
  if not replay then
    check(w)
  end
end
if purged then
  for _, w in ipairs(windows) do
    if w.purge then
      purge(state, log, purged, now - w.dur)
    end
  end
end

-- Write back what trimming moved, plus the charge itself on a grant.
local grant = best_wait == 0
local record, remaining, drop, log_new = {now, pr}, {}, {}, false
for _, w in ipairs(windows) do
  if grant and not replay then
    if w.kind == 'r' then
      updates[#updates + 1] = w.f .. 'v'
      updates[#updates + 1] = w.total + w.cost
    else
      updates[#updates + 1] = w.f .. 'v'
      updates[#updates + 1] = w.r - w.cost
      updates[#updates + 1] = w.f .. 'a'
      updates[#updates + 1] = w.a
    end
    if not w.n or w.n == '' then
      updates[#updates + 1] = w.f .. 'n'
      updates[#updates + 1] = now
      log_new = log_new or w.purge -- nothing left in the log: ZADD creates it afresh
    end
    w.used = w.used + w.cost
    w.own = w.own + w.cost
    w.own_moved = true
    record[#record + 1] = w.name .. '=' .. w.cost
  end
  if w.own_moved then
    if w.own > 0 then
      updates[#updates + 1] = w.f .. 'p:' .. pr
      updates[#updates + 1] = w.own
    else
      drop[#drop + 1] = w.f .. 'p:' .. pr
    end
  end
  remaining[#remaining + 1] = w.hi - w.used
end
-- TTLs are refreshed when a quarter of the TTL has passed, or when a key may have
-- just been created; PEXPIRE on every grant would be most of the script's calls.
local refresh = not vals[3] or tonumber(vals[3]) < now - ttl / 4
if refresh and #updates > 0 then
  updates[#updates + 1] = 'x'
  updates[#updates + 1] = now
end
if grant and not replay and #windows > 0 then
  updates[#updates + 1] = 'c:' .. rid
  updates[#updates + 1] = table.concat(record, '|')
  redis.call('ZADD', log, now, rid)
  if refresh or log_new then
    redis.call('PEXPIRE', log, ttl)
  end
end
if #updates > 0 then
  redis.call('HSET', state, unpack(updates))
  if refresh then
    redis.call('PEXPIRE', state, math.max(ttl, until_ms - now + ttl)) -- never cut a block short
  end
end
if #drop > 0 then
  redis.call('HDEL', state, unpack(drop))
end

if not grant then
  return table.concat({0, best_reason, best_window, best_wait == INF and -1 or best_wait, now}, '|')
end
redis.call('ZADD', leases, now + tonumber(ARGV[5]), lease)
if refresh or leases_new then
  redis.call('PEXPIRE', leases, ttl)
end
return table.concat({1, replay and 1 or 0, now, table.concat(remaining, ',')}, '|')
