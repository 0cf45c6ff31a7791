-- Calendar quota: at most limit units per calendar period (an hour, a day,
-- a week or a month of some time zone). The count resets when a period
-- starts.
--
-- A body (the package documentation, "Writing an algorithm", has the
-- contract): decide(key, now, n, limit, b0, b1, b2, b3), then write, with
--   limit           units per period
--   b0 < b1 < b2 < b3
--                   the starts of four periods in a row, in µs since the
--                   Unix epoch: the previous, the current, the next and the
--                   one after, as the client's clock and time zone rules
--                   see them. Time zones (DST, half-hour offsets, months
--                   of 28 to 31 days) are the client's to apply; the
--                   script only picks the period that holds now:
--                   [b0, b1), [b1, b2) or [b2, b3).
--
-- Clock skew at a boundary: the client sends the periods around its own
-- clock, so whichever side of a boundary the script's now falls on (the
-- Redis clock a little behind or ahead of the client's), the exact bounds
-- of its period are here. A now more than a period away from the client's
-- clock (now < b0, or now >= b3) falls in periods of the nearest known
-- length, b1 - b0 or b3 - b2, laid end to end from b0 or b3: exact for
-- hours, off by a DST hour or a month's extra days otherwise, and never
-- longer than a period.
--
-- State: the string "<period start µs> <count>", written with SET ... PX so
-- that it expires a margin after its period ends. The TTL only collects
-- garbage: decisions compare the stored start with the current period's.
-- A start before the current period's is an older period: its count is
-- over and counts as 0. A value in any other form (a bare counter left by
-- INCR-based code, say) counts as that many units, at most limit, in the
-- current period, and is rewritten with a TTL even when the call is
-- denied. A key of ours found without a TTL gets one.
--
-- Other parameters (the same key read with another limit, period or time
-- zone): the count is kept whenever its stored start is within the current
-- period or after it (another zone's, a finer period's: its units were
-- all spent in the current period), and the limit in force judges it, so
-- remaining is limit - count, at least 0. A stored start before the
-- current period's start counts as an older period.
--
-- Debit and Refund (write with n past what decide allowed, or negative):
-- the count grows past the limit, up to limit + max_debt (2^50), and the
-- key denies until its period ends; a refund lowers it, never below 0,
-- and a count of 0 deletes the key.
--
-- Time going backwards: a stored start after the current period's (the
-- clock went back across a boundary) keeps its count, which moves into
-- the current period, and the key is rewritten with the current start, so
-- nothing refills and no duration exceeds the current period.

local max_debt = 1125899906842624

local function write(consume, key, now, n, allowed, limit, pstart, pend, count, dirty, v)
  if consume then
    count = count + n
    if count < 0 then
      count = 0
    elseif count > limit + max_debt then
      count = limit + max_debt
    end
    dirty = true
  end
  local left = pend - now
  if dirty then
    if count > 0 then
      redis.call('SET', key, string.format('%d %d', pstart, count), 'PX', string.format('%d', math.ceil(left / 1000) + ttl_margin))
    else
      redis.call('DEL', key)
    end
  elseif v and redis.call('PTTL', key) == -1 then
    redis.call('PEXPIRE', key, string.format('%d', math.ceil(left / 1000) + ttl_margin))
  end
  local retry, reset = 0, 0
  if not allowed then retry = left end
  if count > 0 then reset = left end
  local remaining = limit - count
  if remaining < 0 then remaining = 0 end
  return remaining, retry, reset
end

local function decide(key, now, n, limit, b0, b1, b2, b3)
  limit, b0, b1, b2, b3 = limit + 0, b0 + 0, b1 + 0, b2 + 0, b3 + 0
  local pstart, pend
  if now < b0 then
    local len = b1 - b0
    pstart = b0 - math.ceil((b0 - now) / len) * len
    pend = pstart + len
  elseif now < b1 then
    pstart, pend = b0, b1
  elseif now < b2 then
    pstart, pend = b1, b2
  elseif now < b3 then
    pstart, pend = b2, b3
  else
    local len = b3 - b2
    pstart = b3 + math.floor((now - b3) / len) * len
    pend = pstart + len
  end
  local count, dirty = 0, false
  local v = redis.call('GET', key)
  if v then
    local s, c = string.match(v, '^(-?%d+) (%d+)$')
    if s then
      s = s + 0
      if s == pstart then
        count = c + 0
      elseif s > pstart then
        -- Written within or after the current period: its units count
        -- here, and the key takes the current start.
        count, dirty = c + 0, true
      end
    else
      count = math.floor(tonumber(v) or 0)
      if count ~= count or count < 0 or count > limit then count = limit end
      dirty = true
    end
  end
  local allowed = count + n <= limit
  return allowed, write, allowed, limit, pstart, pend, count, dirty, v
end
