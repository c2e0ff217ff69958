-- Shared helpers, prepended to every limiter script when it is loaded.
--
-- Data layout of one account (all keys share the account's {hash tag}):
--   state  HASH  g                   "x|bu|<w>=v,n|<w>=v,a,n..." in plan order, where
--                                    x is when the keys' TTLs were last refreshed, bu
--                                    the block's end (ms), and each window <w> holds
--                                    "v,n" if rolling, "v,a,n" if regenerating: v the
--                                    rolling total or the bucket's remaining amount, a
--                                    the bucket's tick anchor, n the grant time of the
--                                    oldest charge still in the window's totals (older
--                                    ones were trimmed). '' stands for unset: no block,
--                                    total 0, a full bucket, no charge.
--                b:r                 the block's reason
--                rv                  the reserve in force, "<w>=m|<w>=m..." in plan
--                                    order (milli-units, 0 <= m <= the window's hi):
--                                    a PR over its share stops at hi - m. Set by
--                                    lua/reserve.lua; without it, the plan's P_LO
--                rd                  what the reserve was sized from (text, for
--                                    `inspect`; no script reads it)
--                p:<pr>              the PR's use, "<w>=u|<w>=u..." in plan order; gone
--                                    when all are 0
--                c:<request id>      charge record "grant_ms|pr|<w>=cost|<w>=cost...",
--                                    fields read by position: pr is any text without
--                                    '|' (see `charge_of`); '' for sync's charges
--   log    ZSET  request id -> grant ms, one log for every window of the plan
--   leases ZSET  lease id   -> deadline ms (live while deadline > now); expired ones
--                are swept by acquire once SWEEP_AT leases (or the cap) are stored
-- Amounts are integer milli-units. A charge counts in a window while now < grant + D.
-- Ids are data, never syntax: a PR id (any text but '|'), a request id (any text) and a
-- model (any text but '|') are only compared whole, or used whole as a field name or
-- set member, and never go into a Lua pattern or a format's '%s' (which stops at a NUL
-- byte). The one id read out of a packed string is a record's PR, by position. Window
-- names ([A-Za-z0-9_], checked by `luagen`) are the only names in patterns.
--
-- Why packed: in Redis, every hash field read or written, every command and every Lua
-- table costs on each acquire; acquire's usual path reads three fields and writes
-- three. Numbers go to Redis as strings made by string.format('%d'): Lua's own number
-- to string conversion is several times slower.
--
-- The plan's static numbers are not arguments: `scheduler/quota/luagen.py` prepends
-- them to each script as Lua literals, so each plan has its own script SHAs and no call
-- pays for encoding or parsing them:
--   TTL, TTL_REFRESH   key TTL (ms); refresh the TTLs once this much time has passed
--   CAP, PER_MODEL     concurrency cap (0 = none); whether leases count per model
--   SWEEP_AT           acquire removes expired leases once this many leases are stored
--   INF                math.huge
--   NW, GN             number of windows; number of '|'-separated slots in g
--   PURGE, LONGEST     index and duration of the window whose expiry forgets a charge
--                      record (PURGE = 0 without windows)
--   PLAN()             per window, P_SLOTS slots, read by name as K[(i - 1) * P_SLOTS +
--                      P_<slot>]: P_DUR, P_HI, P_LO, P_SHARE, P_LIMIT, P_TICK, P_REGEN
--                      (0 for rolling), P_GI (index of the window's v in g), P_NAME
--   WINDOWS()          the same, one table per window, for the scripts off the hot path
-- Every script also starts with `bucket_at` (lua/bucket.lua), and acquire gets its
-- usual case as straight-line code generated for the plan (`luagen.fast_path`).

-- The helpers are built on demand: a function defined at the top of a script is
-- created anew on every call, and acquire's usual path needs none of them.
local function LIB()
  local L = {}

  -- Now in epoch ms, as a number and as its decimal string.
  function L.now(override)
    if override and override ~= '' then
      return override + 0, override
    end
    local t = redis.call('TIME')
    local s = t[1] .. string.sub('00000' .. t[2], -6, -4)
    return s + 0, s
  end

  -- g as a table of GN strings ('' when unset): x, bu, then each window's slots at
  -- its index in PLAN(). Windows are found by name, so a plan that gained, lost or
  -- reordered windows keeps the state of the ones it still has.
  function L.gload(g)
    local gv = {}
    for i = 1, GN do
      gv[i] = ''
    end
    local x, bu, rest = string.match(g or '', '^([^|]*)|([^|]*)(.*)$')
    if not x then
      return gv
    end
    gv[1], gv[2] = x, bu
    local stored = {}
    for name, slots in string.gmatch(rest, '|([%w_]+)=([^|]*)') do
      stored[name] = slots
    end
    local K = PLAN()
    for i = 1, NW do
      local k = (i - 1) * P_SLOTS
      local regen, gi, name = K[k + P_REGEN], K[k + P_GI], K[k + P_NAME]
      local v, a, n = string.match(stored[name] or '', '^([^,]*),([^,]*),([^,]*)$')
      if regen == 0 then
        v, n = string.match(stored[name] or '', '^([^,]*),([^,]*)$')
      end
      if v then
        gv[gi], gv[gi + 1] = v, regen == 0 and n or a
        if regen > 0 then
          gv[gi + 2] = n
        end
      end
    end
    return gv
  end

  -- g as stored: "x|bu|<name>=v,n|<name>=v,a,n..." in plan order.
  function L.gsave(gv)
    local out, K = {gv[1], gv[2]}, PLAN()
    for i = 1, NW do
      local k = (i - 1) * P_SLOTS
      local regen, gi, name = K[k + P_REGEN], K[k + P_GI], K[k + P_NAME]
      out[i + 2] = name .. '=' .. gv[gi] .. ',' .. gv[gi + 1] .. (regen > 0 and ',' .. gv[gi + 2] or '')
    end
    return table.concat(out, '|')
  end

  -- A PR's use per window as numbers (0 when unset), found by window name.
  function L.pload(p)
    local stored, pv, K = {}, {}, PLAN()
    for name, u in string.gmatch(p or '', '([%w_]+)=([^|]*)') do
      stored[name] = tonumber(u)
    end
    for i = 1, NW do
      pv[i] = stored[K[(i - 1) * P_SLOTS + P_NAME]] or 0
    end
    return pv
  end

  -- Each window's line for a PR over its share: hi minus the reserve in force (rv),
  -- found by window name; a window rv does not name keeps the plan's P_LO.
  function L.rload(rv)
    local stored, los, K = {}, {}, PLAN()
    for name, m in string.gmatch(rv or '', '([%w_]+)=(%d+)') do
      stored[name] = tonumber(m)
    end
    for i = 1, NW do
      local k = (i - 1) * P_SLOTS
      local m = stored[K[k + P_NAME]]
      los[i] = m and math.max(0, K[k + P_HI] - m) or K[k + P_LO]
    end
    return los
  end

  -- A PR's use as stored, "<name>=u|<name>=u..." in plan order, or nil when nothing is
  -- left and the field should go (use never drops below 0: a negative amount is 0).
  function L.pstr(pv)
    local out, any, K = {}, false, PLAN()
    for i = 1, NW do
      local u = pv[i] > 0 and pv[i] or 0
      any = any or u > 0
      out[i] = K[(i - 1) * P_SLOTS + P_NAME] .. '=' .. string.format('%d', u)
    end
    return any and table.concat(out, '|') or nil
  end

  -- A charge record is forgotten once its charge has left the plan's longest window,
  -- even before a trim has removed it: settle, refund and replays must not see it.
  function L.live_record(record, now)
    if not record then
      return false
    end
    if PURGE > 0 and string.match(record, '^[^|]*') + 0 <= now - LONGEST then
      return false
    end
    return record
  end

  -- The cost a charge record holds for window `name`, and the PR it belongs to. The
  -- record's fields are read by position: the PR id is the 2nd field (any text but
  -- '|'), and the costs are only looked for after it, so that no PR id (say
  -- "requests_5h=999999999") can be taken for a cost.
  function L.charge_of(record, name)
    if not record then
      return 0, ''
    end
    local pr, costs_at = string.match(record, '^[^|]*|([^|]*)()')
    if not pr then
      return 0, ''
    end
    return tonumber(string.match(record, '|' .. name .. '=(%-?%d+)', costs_at)) or 0, pr
  end

  -- Take charges that left window `i` (duration `dur`) off its totals, if any are due
  -- (`n` is the grant time of the oldest charge still counted). `own` is the calling
  -- PR's use, kept in memory and written back by the caller; what other PRs lose is
  -- added up in `others[pr][i]` for `flush`. `records` caches the records read.
  -- Returns the rolling total, the caller PR's use, the expired entries (nil if
  -- nothing was due) and the new `n` ('' when no charge is left in the totals).
  function L.trim(state, log, i, dur, name, now, total, own, pr, n, others, records)
    local cutoff = now - dur
    if n == '' or n + 0 > cutoff then
      return total, own, nil, n
    end
    local expired = redis.call('ZRANGEBYSCORE', log, n, string.format('%d', cutoff), 'WITHSCORES')
    for j = 1, #expired, 2 do
      local rid = expired[j]
      local record = records[rid]
      if record == nil then
        record = redis.call('HGET', state, 'c:' .. rid)
        records[rid] = record
      end
      local amount, owner = L.charge_of(record, name)
      total = total - amount
      if owner == pr then
        own = own - amount
      elseif owner ~= '' and amount ~= 0 then
        local use = others[owner]
        if not use then
          use = {}
          for w = 1, NW do
            use[w] = 0
          end
          others[owner] = use
        end
        use[i] = use[i] - amount
      end
    end
    local next_entry = redis.call('ZRANGEBYSCORE', log, string.format('(%d', cutoff), '+inf',
      'WITHSCORES', 'LIMIT', 0, 1)
    return total, own, expired, next_entry[2] or ''
  end

  -- Apply what `trim` took off other PRs' use: one read and one write per PR.
  function L.flush(state, others)
    for owner, delta in pairs(others) do
      local pv = L.pload(redis.call('HGET', state, 'p:' .. owner))
      for i = 1, NW do
        pv[i] = pv[i] + delta[i]
      end
      local p = L.pstr(pv)
      if p then
        redis.call('HSET', state, 'p:' .. owner, p)
      else
        redis.call('HDEL', state, 'p:' .. owner)
      end
    end
  end

  -- Forget charges that left the plan's longest window: no window needs them any more.
  function L.purge(state, log, expired, cutoff)
    if #expired == 0 then
      return
    end
    local fields = {}
    for j = 1, #expired, 2 do
      fields[#fields + 1] = 'c:' .. expired[j]
      if #fields == 500 then -- unpack() has a stack limit; a week-long idle gap is large
        redis.call('HDEL', state, unpack(fields))
        fields = {}
      end
    end
    if #fields > 0 then
      redis.call('HDEL', state, unpack(fields))
    end
    redis.call('ZREMRANGEBYSCORE', log, '-inf', string.format('%d', cutoff))
  end

  -- When enough of a rolling window's live charges (or of this PR's) will have
  -- expired: the waits until `need_hi`, `need_lo` and `need_share` more are free.
  function L.rolling_waits(state, log, dur, name, now, pr, need_hi, need_lo, need_share)
    local t_hi = need_hi > 0 and INF or 0
    local t_lo = need_lo > 0 and INF or 0
    local t_sh = need_share > 0 and INF or 0
    local entries = redis.call('ZRANGEBYSCORE', log, string.format('(%d', now - dur), '+inf',
      'WITHSCORES')
    local acc, acc_pr = 0, 0
    for j = 1, #entries, 2 do
      if t_hi < INF and t_lo < INF and t_sh < INF then
        break
      end
      local amount, owner = L.charge_of(redis.call('HGET', state, 'c:' .. entries[j]), name)
      local when = entries[j + 1] + dur - now
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

  return L
end
