-- Set the reserve in force (the adaptive reserve, docs/reserve.md): a PR over its share
-- then stops at hi - m in each window, from the next acquire on. Each change is kept in
-- a short history, so a replay of the grant trace can check every grant against the
-- reserve in force when it was made.
--
-- KEYS[1] = state hash of the account
-- KEYS[2] = reserve history list ("<now>|<rv>", oldest first)
-- ARGV[1] = now in ms, or '' for Redis TIME
-- ARGV[2] = the reserve per window, "m1,m2,..." in plan order (milli-units >= 0)
-- ARGV[3] = what it was sized from (text kept as is, for `inspect`)
-- ARGV[4] = how many history entries to keep (0: none)
-- Returns {now, rv as stored}

local L = LIB()
local now, nows = L.now(ARGV[1])
local state, history = KEYS[1], KEYS[2]
local K, out, i = PLAN(), {}, 0
for m in string.gmatch(ARGV[2], '[^,]+') do
  i = i + 1
  local k = (i - 1) * P_SLOTS
  local amount = tonumber(m)
  if i > NW or not amount or amount < 0 or amount ~= math.floor(amount) then
    return redis.error_reply('reserve: expected ' .. NW .. ' whole numbers >= 0')
  end
  -- no more than the window's spendable budget: the line never goes below 0
  out[i] = K[k + P_NAME] .. '=' .. string.format('%d', math.min(amount, K[k + P_HI]))
end
if i ~= NW then
  return redis.error_reply('reserve: expected ' .. NW .. ' whole numbers >= 0')
end
local rv = table.concat(out, '|')
local before = redis.call('HGET', state, 'rv')
redis.call('HSET', state, 'rv', rv, 'rd', ARGV[3])
if redis.call('PTTL', state) < 0 then -- a new hash: acquire refreshes it from here on
  redis.call('PEXPIRE', state, TTL)
end
local keep = tonumber(ARGV[4]) or 0
if rv ~= before and keep > 0 then
  redis.call('RPUSH', history, nows .. '|' .. rv)
  redis.call('LTRIM', history, -keep, -1)
  redis.call('PEXPIRE', history, TTL)
end
return {now, rv}
