-- A read-only snapshot of one account: it never trims, so `inspect` can run any time.
-- Expired entries are skipped while reading instead of being removed.
--
-- KEYS[1] = charges hash
-- KEYS[2] = leases zset
-- KEYS[3] = block hash
-- KEYS[2 + 2i], KEYS[3 + 2i] = log zset and use hash of window i (1-based)
-- ARGV[1] = now in ms, or '' for Redis TIME
-- ARGV[2] = number of windows
-- ARGV[3 + 6(i-1) ...] = window i: name, kind (r|g), duration ms, limit, tick ms, regen
-- Returns a JSON object: now, windows[{name, used, next_free_at, pr_used}], leases, block.

local now = now_ms(ARGV[1])
local charges = KEYS[1]
local result = {now = now, windows = {}, leases = {}, block = cjson.null}

local n = tonumber(ARGV[2])
for i = 1, n do
  local b = 3 + (i - 1) * 6
  local name, kind, dur, limit = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local log, use = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local entries = redis.call('ZRANGEBYSCORE', log, '(' .. (now - dur), '+inf', 'WITHSCORES')
  local used, pr_used, next_free = 0, {}, -1
  for j = 1, #entries, 2 do
    local amount, pr = charge_of(redis.call('HGET', charges, entries[j]), name)
    used = used + amount
    if pr and pr ~= '' then
      pr_used[pr] = (pr_used[pr] or 0) + amount
    end
    if next_free < 0 and amount > 0 then
      next_free = tonumber(entries[j + 1]) + dur
    end
  end
  if kind == 'g' then
    local vals = redis.call('HMGET', use, 'r', 'a')
    local r, a = bucket_at(vals[1], vals[2], now, limit, tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]))
    used = limit - r
    next_free = -1
    if r < limit then
      next_free = a + tonumber(ARGV[b + 4])
    end
  end
  if next(pr_used) == nil then
    pr_used = cjson.null
  end
  result.windows[i] = {name = name, used = used, next_free_at = next_free, pr_used = pr_used}
end

local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf', 'WITHSCORES')
for j = 1, #live, 2 do
  result.leases[#result.leases + 1] = {id = live[j], deadline = tonumber(live[j + 1])}
end
local blk = redis.call('HMGET', KEYS[3], 'u', 'r')
if blk[1] and tonumber(blk[1]) > now then
  result.block = {['until'] = tonumber(blk[1]), reason = blk[2] or ''}
end
if #result.leases == 0 then
  result.leases = cjson.null
end
return cjson.encode(result)
