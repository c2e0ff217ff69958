-- How much of each window's use leaves it by a given time: what the adaptive reserve
-- may lend (docs/reserve.md, "Lent where it comes back in time"). A charge granted at
-- g counts in a window of duration D while now < g + D, so room lent now is back by T
-- for every charge with g <= T - D. Read-only, like status: it never trims.
--
-- KEYS[1] = state hash of the account
-- KEYS[2] = charge log zset
-- ARGV[1] = now in ms, or '' for Redis TIME
-- ARGV[2] = per window, in plan order, "T1,T2,...": the ms the room must be back by
-- ARGV[3] = ms from now the answer must stay true for (the controller's interval): a
--           charge that leaves before then is not counted, as the room it frees is
--           spendable at once
-- Returns {now, m1, m2, ...}: per window, milli-units still counted at now + ARGV[3]
-- that leave by its T (0 for a regenerating window: a bucket has no charges to leave)

local L = LIB()
local now = L.now(ARGV[1])
local state, log = KEYS[1], KEYS[2]
local windows = WINDOWS()
local keep = tonumber(ARGV[3])
local by, i = {}, 0
for t in string.gmatch(ARGV[2], '[^,]+') do
  i = i + 1
  by[i] = tonumber(t)
  if not by[i] or by[i] ~= math.floor(by[i]) then
    return redis.error_reply('leaving: expected ' .. #windows .. ' whole ms times')
  end
end
if i ~= #windows or not keep or keep < 0 then
  return redis.error_reply('leaving: expected ' .. #windows .. ' whole ms times and an interval >= 0')
end

local out = {now}
for j, w in ipairs(windows) do
  local total = 0
  local from, to = now + keep - w.dur, by[j] - w.dur
  if w.kind ~= 'g' and to > from then
    local ids = redis.call('ZRANGEBYSCORE', log, '(' .. from, to)
    for _, id in ipairs(ids) do
      total = total + L.charge_of(redis.call('HGET', state, 'c:' .. id), w.name)
    end
  end
  out[j + 1] = total
end
return out
