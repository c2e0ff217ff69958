-- A regenerating bucket brought to `now`, written once for every script: acquire's fast
-- path (generated for the plan by `scheduler/quota/luagen.py`), its general path and
-- the other scripts all call it. It sits at the top of each script, outside LIB(),
-- because the fast path runs before the helpers are built; it is the one closure the
-- fast path creates (under 0.1 us a call, measured against a script without it).
--
-- r, a: the stored remaining amount and tick anchor ('' or nil: unset, a full bucket).
-- Returns (remaining, anchor) as numbers. A full bucket re-anchors at now, so the first
-- tick after a spend comes one tick after that spend.
local function bucket_at(r, a, now, limit, tick, regen)
  r = (r and r ~= '') and r + 0 or limit
  a = (a and a ~= '') and a + 0 or now
  if r >= limit then
    return limit, now
  end
  local k = math.floor((now - a) / tick)
  if k > 0 then
    r = math.min(limit, r + k * regen)
    a = a + k * tick
    if r >= limit then
      return limit, now
    end
  end
  return r, a
end
