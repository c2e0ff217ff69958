-- Take budget for one provider request: every window, the concurrency cap, the block
-- and the PR share/reserve rule, all or nothing. A denial charges nothing.
--
-- KEYS[1] = state hash of the account
-- KEYS[2] = charge log zset
-- KEYS[3] = leases zset
-- ARGV[1] = now in ms, or '' for Redis TIME
-- ARGV[2] = request id
-- ARGV[3] = PR id
-- ARGV[4] = lease length in ms
-- ARGV[5] = cost per window, "c" for all or "c1,c2,..." in plan order
-- ARGV[6] = model, optional (default ''); the lease id is "<model>|<request id>"
-- ARGV[7] = '1' if the PR is large (its estimate exceeds its share), optional: it is
--           then over its share from its first request and never spends the reserve
-- Returns {1, replayed (0/1), now, remaining per window...}
-- or {0, reason, window, retry after ms (-1: never), now}
--
-- This is the hot path: it avoids what costs in Redis Lua, namely commands whose
-- answer it can infer, hash fields, tables and closures it does not need, and Lua's
-- number formatting. The usual case runs in the fast path generated for the plan
-- (`luagen.fast_path`, at the marker below); the general path handles every case.

local state, log, leases = KEYS[1], KEYS[2], KEYS[3]
local nows, rid, pr, lease_ms, costs = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local model = ARGV[6] or ''
local large = ARGV[7] == '1'
local lease = model .. '|' .. rid
local fmt = string.format
if nows == '' then
  local t = redis.call('TIME')
  nows = t[1] .. string.sub('00000' .. t[2], -6, -4)
end
local now = nows + 0

-- rv: the reserve in force, set by the waker from demand (lua/reserve.lua); without
-- it each window's line is the plan's own (P_LO, from the configured fixed reserve).
local vals = redis.call('HMGET', state, 'c:' .. rid, 'g', 'p:' .. pr, 'rv')
-- A stale record is trimmed and purged below, before the new charge is written.
local replay = vals[1] and (PURGE == 0 or string.match(vals[1], '^[^|]*') + 0 > now - LONGEST)

local cost, cost_list = nil, nil -- one cost for every window, or one per window
if string.find(costs, ',', 1, true) then
  cost_list = {}
  for c in string.gmatch(costs, '[^,]+') do
    cost_list[#cost_list + 1] = c + 0
  end
else
  cost = costs + 0
end

-- Concurrency: the slot this request needs frees when enough leases reach their
-- deadline. A request whose own lease is still live (a replay) keeps its slot.
-- Expired leases (of crashed workers, or never released) are swept once SWEEP_AT of
-- them may have gathered, and always before the cap is checked against a full set: a
-- set smaller than the cap cannot fill it, live or not. Released leases leave the set
-- at once, so in the usual case nothing needs sweeping.
local conc_wait = 0
local leases_new -- no lease is stored: ZADD creates the set afresh, without a TTL
if not PER_MODEL then
  local count = redis.call('ZCARD', leases)
  if count >= SWEEP_AT or (CAP > 0 and count >= CAP) then
    count = count - redis.call('ZREMRANGEBYSCORE', leases, '-inf', nows)
  end
  leases_new = count == 0
  if CAP > 0 and count >= CAP and not redis.call('ZSCORE', leases, lease) then
    -- swept just now: every lease left is live
    local nth = redis.call('ZRANGE', leases, count - CAP, count - CAP, 'WITHSCORES')
    conc_wait = nth[2] - now
  end
else
  local all = redis.call('ZRANGE', leases, 0, -1, 'WITHSCORES')
  local prefix = model .. '|'
  local deadlines, held, stale = {}, false, 0
  for j = 1, #all, 2 do
    local deadline = all[j + 1] + 0
    if deadline <= now then
      stale = stale + 1
    else
      held = held or all[j] == lease
      if string.sub(all[j], 1, #prefix) == prefix then
        deadlines[#deadlines + 1] = deadline
      end
    end
  end
  leases_new = #all == 0
  if stale >= SWEEP_AT then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', nows)
    leases_new = stale * 2 == #all
  end
  if #deadlines >= CAP and not held then
    conc_wait = deadlines[#deadlines - CAP + 1] - now
  end
end

if vals[2] and conc_wait == 0 and not replay then
-- @FAST
end

-- The general path, with the plan's tables and the shared helpers.
-- @LIB
local K, L = PLAN(), LIB()
local gv, pv, los = L.gload(vals[2]), L.pload(vals[3]), L.rload(vals[4])

local best_wait, best_reason, best_window = 0, '', ''
local function consider(wait, reason, window)
  if wait > best_wait then
    best_wait, best_reason, best_window = wait, reason, window
  end
end
local until_ms = gv[2] ~= '' and gv[2] + 0 or 0
if until_ms > now then
  consider(until_ms - now, 'cooldown', '')
end
consider(conc_wait, 'concurrency', '')

-- Each window: trim what left it, then check the request against it. What the
-- write-back below needs is kept in `ws`, WS slots per window: used, own, c, r, a, n
-- and trimmed, in that order.
local WS = 7
local ws, others, records, purged, purge_cutoff, dirty = {}, {}, {}, nil, 0, false
for i = 1, NW do
  local k = (i - 1) * P_SLOTS
  local dur, hi, lo, share = K[k + P_DUR], K[k + P_HI], los[i], K[k + P_SHARE]
  local limit, tick, regen = K[k + P_LIMIT], K[k + P_TICK], K[k + P_REGEN]
  local gi, name = K[k + P_GI], K[k + P_NAME]
  local v = gv[gi]
  local n = gv[regen == 0 and gi + 1 or gi + 2]
  local total = (regen == 0 and v ~= '') and v + 0 or 0
  local own = pv[i]
  local trimmed = false
  if n ~= '' and n + 0 <= now - dur then
    local expired
    total, own, expired, n = L.trim(state, log, i, dur, name, now, total, own, pr, n, others,
      records)
    trimmed, dirty = true, true
    if i == PURGE then
      purged, purge_cutoff = expired, now - dur
    end
  end
  local used, r, a = total, 0, 0
  if regen > 0 then
    r, a = bucket_at(v, gv[gi + 1], now, limit, tick, regen)
    used = limit - r
  end
  local c = cost or cost_list[i]
  if not replay then
    local after = used + c
    local over = large or own + c > share
    if after > hi or (over and after > lo) then
      local t_hi, t_lo, t_sh
      if regen == 0 then
        t_hi, t_lo, t_sh = L.rolling_waits(state, log, dur, name, now, pr, after - hi, after - lo,
          own + c - share)
      else -- the bucket sets the window's waits; the log still holds the PR's own use
        local function bucket_wait(need)
          if need <= 0 then
            return 0
          end
          if r + need > limit then
            return INF
          end
          return a + math.ceil(need / regen) * tick - now
        end
        t_hi, t_lo = bucket_wait(after - hi), bucket_wait(after - lo)
        local _, _, sh = L.rolling_waits(state, log, dur, name, now, pr, 0, 0, own + c - share)
        t_sh = sh
      end
      consider(t_hi, 'window', name)
      if over then
        -- a large PR stays over its share however its own use falls: only the line helps
        if large or t_lo <= t_sh then
          consider(t_lo, 'reserve', name)
        else
          consider(t_sh, 'pr_share', name)
        end
      end
    end
  end
  local s = (i - 1) * WS
  ws[s + 1], ws[s + 2], ws[s + 3], ws[s + 4], ws[s + 5], ws[s + 6], ws[s + 7] =
    used, own, c, r, a, n, trimmed
end
if next(others) then
  L.flush(state, others)
end
if purged then
  L.purge(state, log, purged, purge_cutoff)
end

-- Write back what trimming moved, plus the charge itself on a grant.
local grant = best_wait == 0
local charge = grant and not replay and NW > 0
local remaining, log_new, own_moved = {}, false, false
for i = 1, NW do
  local s, k = (i - 1) * WS, (i - 1) * P_SLOTS
  local used, own, c, r, a, n, moved = unpack(ws, s + 1, s + WS)
  local hi, regen, gi = K[k + P_HI], K[k + P_REGEN], K[k + P_GI]
  local ni = regen == 0 and gi + 1 or gi + 2
  gv[ni] = n
  if charge then
    if regen == 0 then
      gv[gi] = fmt('%d', used + c)
    else
      gv[gi], gv[gi + 1] = fmt('%d', r - c), fmt('%d', a)
    end
    if n == '' then
      gv[ni] = nows
      log_new = log_new or i == PURGE -- nothing left in the log: ZADD creates it afresh
    end
    used, own, moved = used + c, own + c, true
  elseif moved and regen == 0 then
    gv[gi] = fmt('%d', used)
  end
  if moved then
    pv[i], own_moved = own, true
  end
  remaining[i] = hi - used
end
dirty = dirty or charge
-- TTLs are refreshed when TTL_REFRESH has passed, or when a key may have just been
-- created; PEXPIRE on every grant would be most of the script's calls.
local refresh = gv[1] == '' or gv[1] + 0 < now - TTL_REFRESH
if refresh and dirty then
  gv[1] = nows
end
local updates = {}
if dirty then
  updates[1], updates[2] = 'g', L.gsave(gv)
end
if charge then
  local record = {nows, pr}
  for i = 1, NW do
    local name = K[(i - 1) * P_SLOTS + P_NAME]
    record[i + 2] = name .. '=' .. (cost and costs or fmt('%d', cost_list[i]))
  end
  record = table.concat(record, '|')
  updates[#updates + 1] = 'c:' .. rid
  updates[#updates + 1] = record
  redis.call('ZADD', log, nows, rid)
  if refresh or log_new then
    redis.call('PEXPIRE', log, TTL)
  end
end
if own_moved then
  local p = L.pstr(pv)
  if p then
    updates[#updates + 1] = 'p:' .. pr
    updates[#updates + 1] = p
  else
    redis.call('HDEL', state, 'p:' .. pr)
  end
end
if #updates > 0 then
  redis.call('HSET', state, unpack(updates))
  if refresh and dirty then
    redis.call('PEXPIRE', state, fmt('%d', math.max(TTL, until_ms - now + TTL))) -- never cut a block short
  end
end

if not grant then
  return {0, best_reason, best_window, best_wait == INF and -1 or best_wait, now}
end
redis.call('ZADD', leases, fmt('%d', now + lease_ms), lease)
if refresh or leases_new then
  redis.call('PEXPIRE', leases, TTL)
end
return {1, replay and 1 or 0, now, unpack(remaining)}
