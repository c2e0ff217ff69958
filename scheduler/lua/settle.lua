-- Correct a charge once the provider reported the real cost (or refund it, when the
-- request never reached the provider). Only windows the charge still counts in move.
--
-- KEYS[1] = charges hash
-- KEYS[2i], KEYS[2i + 1] = log zset and use hash of window i (1-based)
-- ARGV[1] = now in ms, or '' for Redis TIME
-- ARGV[2] = request id
-- ARGV[3] = 1 to refund (remove the charge), 0 to settle
-- ARGV[4] = number of windows
-- ARGV[5 + 6(i-1) ...] = window i: name, kind (r|g), new cost, limit, tick ms, regen
-- Returns 1 when the charge was found, 0 otherwise.

local now = now_ms(ARGV[1])
local charges, rid, refund = KEYS[1], ARGV[2], ARGV[3] == '1'
local record = redis.call('HGET', charges, rid)
if not record then
  return 0
end
local pr = string.match(record, '^[^|]*|([^|]*)')
local parts = {string.match(record, '^([^|]*)'), pr}
for i = 1, tonumber(ARGV[4]) do
  local b = 5 + (i - 1) * 6
  local name, kind, limit = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 3])
  local log, use = KEYS[2 * i], KEYS[2 * i + 1]
  local old = charge_of(record, name)
  local new = refund and 0 or tonumber(ARGV[b + 2])
  if redis.call('ZSCORE', log, rid) then
    local delta = new - old
    if kind == 'r' then
      redis.call('HINCRBY', use, 't', delta)
    else
      local vals = redis.call('HMGET', use, 'r', 'a')
      local r, a = bucket_at(vals[1], vals[2], now, limit, tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]))
      redis.call('HSET', use, 'r', math.min(limit, r - delta), 'a', a)
    end
    if pr ~= '' and redis.call('HINCRBY', use, 'p:' .. pr, delta) <= 0 then
      redis.call('HDEL', use, 'p:' .. pr)
    end
    if refund then
      redis.call('ZREM', log, rid)
    end
  end
  parts[#parts + 1] = name .. '=' .. new
end
if refund then
  redis.call('HDEL', charges, rid)
else
  redis.call('HSET', charges, rid, table.concat(parts, '|'))
end
return 1
