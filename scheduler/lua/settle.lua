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

local now = now_ms(ARGV[1])
local state, log, rid, refund = KEYS[1], KEYS[2], ARGV[2], ARGV[3] == '1'
local windows = WINDOWS
local record = live_record(redis.call('HGET', state, 'c:' .. rid), now, windows)
if not record then
  return 0
end
local granted_at = tonumber(string.match(record, '^([^|]*)'))
local pr = string.match(record, '^[^|]*|([^|]*)')
local costs = {}
for c in string.gmatch(ARGV[4], '[^,]+') do
  costs[#costs + 1] = tonumber(c)
end

local parts = {granted_at, pr}
for i, w in ipairs(windows) do
  local old = charge_of(record, w.name)
  local new = refund and 0 or (costs[i] or costs[1])
  local vals = redis.call('HMGET', state, w.f .. 'n', w.f .. 'v', w.f .. 'a')
  local in_totals = vals[1] and vals[1] ~= '' and granted_at >= tonumber(vals[1])
  local live = granted_at > now - w.dur
  local delta = new - old
  if live or (refund and in_totals) then
    if w.kind == 'r' then
      redis.call('HINCRBY', state, w.f .. 'v', delta)
    elseif live then
      local r, a = bucket_at(vals[2], vals[3], now, w)
      redis.call('HSET', state, w.f .. 'v', math.min(w.limit, r - delta), w.f .. 'a', a)
    end
    if pr ~= '' and delta ~= 0 and redis.call('HINCRBY', state, w.f .. 'p:' .. pr, delta) <= 0 then
      redis.call('HDEL', state, w.f .. 'p:' .. pr)
    end
  else
    new = old -- it left this window; a later trim must take off what was added
  end
  parts[#parts + 1] = w.name .. '=' .. new
end
if refund then
  redis.call('HDEL', state, 'c:' .. rid)
  redis.call('ZREM', log, rid)
  if redis.call('EXISTS', log) == 0 then
    -- The log went with its last entry; the next grant must give it a TTL again.
    for _, w in ipairs(windows) do
      redis.call('HSET', state, w.f .. 'n', '')
    end
  end
else
  redis.call('HSET', state, 'c:' .. rid, table.concat(parts, '|'))
end
return 1
