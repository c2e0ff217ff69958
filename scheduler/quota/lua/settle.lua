-- Correct a charge once the provider reported the real cost, or refund it when the
-- request never reached the provider. Only windows the charge still counts in move.
--
-- KEYS[1] = state hash of the account
-- KEYS[2] = charge log zset
-- ARGV[1] = now in ms, or '' for Redis TIME
-- ARGV[2] = request id
-- ARGV[3] = 1 to refund (forget the charge), 0 to settle
-- ARGV[4] = new cost per window, "c" for all or "c1,c2,..." in plan order
-- Returns 1 when the charge was found, 0 otherwise.

local L = LIB()
local now = L.now(ARGV[1])
local state, log, rid, refund = KEYS[1], KEYS[2], ARGV[2], ARGV[3] == '1'
local windows = WINDOWS()
local vals = redis.call('HMGET', state, 'c:' .. rid, 'g')
local record = L.live_record(vals[1], now)
if not record then
  return 0
end
-- By position, as `L.charge_of` reads it: "grant_ms|pr|<w>=cost|...", pr any text but '|'.
local granted, pr = string.match(record, '^([^|]*)|([^|]*)')
if not granted then
  return 0
end
local granted_at = tonumber(granted)
local costs = {}
for c in string.gmatch(ARGV[4], '[^,]+') do
  costs[#costs + 1] = tonumber(c)
end

local gv = L.gload(vals[2])
local pv = pr ~= '' and L.pload(redis.call('HGET', state, 'p:' .. pr)) or nil
local pr_moved = false
local parts = {granted, pr} -- the record rebuilt: the same grant time and PR, new costs
for i, w in ipairs(windows) do
  local old = L.charge_of(record, w.name)
  local new = refund and 0 or (costs[i] or costs[1])
  local gi = w.gi
  local n = gv[w.regen == 0 and gi + 1 or gi + 2]
  local in_totals = n ~= '' and granted_at >= tonumber(n)
  local live = granted_at > now - w.dur
  local delta = new - old
  if live or (refund and in_totals) then
    if w.regen == 0 then
      gv[gi] = string.format('%d', (gv[gi] ~= '' and gv[gi] + 0 or 0) + delta)
    elseif live then
      local r, a = bucket_at(gv[gi], gv[gi + 1], now, w.limit, w.tick, w.regen)
      gv[gi], gv[gi + 1] = string.format('%d', math.min(w.limit, r - delta)), string.format('%d', a)
    end
    if pv and delta ~= 0 then
      -- use never drops below 0 (pstr stores a negative amount as 0)
      pv[i] = math.max(pv[i], 0) + delta
      pr_moved = true
    end
  else
    new = old -- it left this window; a later trim must take off what was added
  end
  parts[#parts + 1] = w.name .. '=' .. string.format('%d', new)
end
if refund then
  redis.call('HDEL', state, 'c:' .. rid)
  redis.call('ZREM', log, rid)
  if redis.call('EXISTS', log) == 0 then
    -- The log went with its last entry; the next grant must give it a TTL again.
    for _, w in ipairs(windows) do
      gv[w.regen == 0 and w.gi + 1 or w.gi + 2] = ''
    end
  end
else
  redis.call('HSET', state, 'c:' .. rid, table.concat(parts, '|'))
end
redis.call('HSET', state, 'g', L.gsave(gv))
if pr_moved then
  local p = L.pstr(pv)
  if p then
    redis.call('HSET', state, 'p:' .. pr, p)
  else
    redis.call('HDEL', state, 'p:' .. pr)
  end
end
return 1
