-- A read-only snapshot of one account: it never trims, so `inspect` can run any time.
-- Expired entries are skipped while reading instead of being removed.
--
-- KEYS[1] = state hash of the account
-- KEYS[2] = charge log zset
-- KEYS[3] = leases zset
-- ARGV[1] = now in ms, or '' for Redis TIME
-- Returns a JSON object: now, windows[{name, used, next_free_at, pr_used}], leases, block,
-- reserve (rv, the reserve in force, or null: the plan's) and demand (rd, or null).

local L = LIB()
local now = L.now(ARGV[1])
local state, log = KEYS[1], KEYS[2]
local windows = WINDOWS()
local gv = L.gload(redis.call('HGET', state, 'g'))
local result = {now = now, windows = {}, leases = cjson.null, block = cjson.null}

for i, w in ipairs(windows) do
  local entries = redis.call('ZRANGEBYSCORE', log, '(' .. (now - w.dur), '+inf', 'WITHSCORES')
  local used, pr_used, next_free = 0, {}, -1
  for j = 1, #entries, 2 do
    local amount, pr = L.charge_of(redis.call('HGET', state, 'c:' .. entries[j]), w.name)
    used = used + amount
    if pr and pr ~= '' and amount ~= 0 then
      pr_used[pr] = (pr_used[pr] or 0) + amount
    end
    if next_free < 0 and amount > 0 then
      next_free = tonumber(entries[j + 1]) + w.dur
    end
  end
  if w.kind == 'g' then
    local r, a = bucket_at(gv[w.gi], gv[w.gi + 1], now, w.limit, w.tick, w.regen)
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
if gv[2] ~= '' and tonumber(gv[2]) > now then
  result.block = {['until'] = tonumber(gv[2]), reason = redis.call('HGET', state, 'b:r') or ''}
end
local rvd = redis.call('HMGET', state, 'rv', 'rd')
result.reserve, result.demand = rvd[1] or cjson.null, rvd[2] or cjson.null
if #windows == 0 then
  result.windows = cjson.null
end
return cjson.encode(result)
