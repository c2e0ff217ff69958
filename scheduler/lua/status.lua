-- A read-only snapshot of one account: it never trims, so `inspect` can run any time.
-- Expired entries are skipped while reading instead of being removed.
--
-- KEYS[1] = state hash of the account
-- KEYS[2] = charge log zset
-- KEYS[3] = leases zset
-- ARGV[1] = now in ms, or '' for Redis TIME
-- Returns a JSON object: now, windows[{name, used, next_free_at, pr_used}], leases, block.

local now = now_ms(ARGV[1])
local state, log = KEYS[1], KEYS[2]
local windows = WINDOWS
local result = {now = now, windows = {}, leases = cjson.null, block = cjson.null}

for i, w in ipairs(windows) do
  local entries = redis.call('ZRANGEBYSCORE', log, '(' .. (now - w.dur), '+inf', 'WITHSCORES')
  local used, pr_used, next_free = 0, {}, -1
  for j = 1, #entries, 2 do
    local amount, pr = charge_of(redis.call('HGET', state, 'c:' .. entries[j]), w.name)
    used = used + amount
    if pr and pr ~= '' and amount ~= 0 then
      pr_used[pr] = (pr_used[pr] or 0) + amount
    end
    if next_free < 0 and amount > 0 then
      next_free = tonumber(entries[j + 1]) + w.dur
    end
  end
  if w.kind == 'g' then
    local vals = redis.call('HMGET', state, w.f .. 'v', w.f .. 'a')
    local r, a = bucket_at(vals[1], vals[2], now, w)
    used, next_free = w.limit - r, -1
    if r < w.limit then
      next_free = a + w.tick
    end
  end
  if next(pr_used) == nil then
    pr_used = cjson.null
  end
  result.windows[i] = {name = w.name, used = used, next_free_at = next_free, pr_used = pr_used}
end

local live = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf', 'WITHSCORES')
if #live > 0 then
  result.leases = {}
  for j = 1, #live, 2 do
    result.leases[#result.leases + 1] = {id = live[j], deadline = tonumber(live[j + 1])}
  end
end
local blk = redis.call('HMGET', state, 'b:u', 'b:r')
if blk[1] and tonumber(blk[1]) > now then
  result.block = {['until'] = tonumber(blk[1]), reason = blk[2] or ''}
end
if #windows == 0 then
  result.windows = cjson.null
end
return cjson.encode(result)
