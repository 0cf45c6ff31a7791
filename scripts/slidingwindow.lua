-- Sliding window counter: the count of the current window plus the count of
-- the previous one, weighted by how much of it still overlaps the window of
-- window µs that ends now. A key's windows form a grid of window µs that
-- starts at the first call it admits. At elapsed = now - start, with
-- 0 <= elapsed < window, the estimate is
--
--   cur + ceil(prev * ((window - elapsed) / window))
--
-- computed in doubles in exactly this order (the in-process state, in
-- slidingwindow.go, repeats it operation for operation). A call of cost n
-- is allowed when estimate + n <= limit.
--
-- A body (the package documentation, "Writing an algorithm", has the
-- contract): decide(key, now, n, limit, window), then write, with
--   limit   units per window (<= 2^40)
--   window  in µs (>= 1000, <= MaxWindow/2)
--
-- State: the string "<start µs> <cur> <prev> <window µs>": the current
-- window's start, the units admitted in it and in the one before, and the
-- window length of the grid; the form "<start µs> <cur> <prev>" of earlier
-- versions reads as a grid of the current window. Once now is a window
-- past start, the grid moves on: one window, and prev takes cur; two or
-- more, and both counts are 0. A state whose counts are both 0 says
-- nothing, and the grid starts again at now, as for a fresh key. Written
-- with SET ... PX so that it expires a margin after it stops mattering:
-- the end of the next window while cur > 0, of this one while only prev
-- is; a write that leaves nothing deletes the key. The TTL only collects
-- garbage: decisions read the stored start. A value in any other form (a
-- bare counter left by INCR-based code, say) counts as that many units,
-- clamped to [0, limit] (NaN as limit), in a window opening now, and is
-- rewritten even when the call is denied. A key of ours found without a
-- TTL gets one.
--
-- Other parameters (the same key read with another limit or window): the
-- counts are kept and the limit in force judges them. A grid of another
-- window length w0 first moves on to now as above, by w0. Then, if now is
-- within a window of the current length from the grid's start, the grid
-- stays where it is and its counts become those of windows of the current
-- length: a longer window weighs the previous window's units more, so the
-- estimate never falls, and a shorter one less. Otherwise (the window
-- shrank, and at least one new window has passed since start) the units of
-- the current window cannot be placed in time: the grid starts again at
-- now, prev taking cur and cur 0, so that they count in full now and fade
-- over one new window, and the previous window's units, all older than
-- the new window, are dropped. No arithmetic rounds, so that a key read
-- alternately with two windows neither drifts nor sticks. The key is
-- rewritten (deleted when both counts end up 0) even when the call is
-- denied.
--
-- Reply: remaining = limit - estimate (after consuming), at least 0;
-- retry_after the earliest time the same call fits if nothing else
-- consumes (in this window when cur + n <= limit, else in the next, where
-- prev is cur and cur 0), from its closed form corrected µs by µs so that
-- it is exactly the earliest under the double arithmetic above;
-- reset_after how long the state still matters (0 when it is empty).
--
-- Cost: a string known to hold digits becomes a number by arithmetic
-- (s + 0), sparing a call to tonumber; a number reaches redis.call as a
-- string made with string.format('%d'), because Redis would convert it
-- with a slow '%.17g'.
--
-- Debit and Refund (write with n past what decide allowed, or negative):
-- a debit adds to the current window's count, up to limit + max_debt
-- (2^50), and the key denies until the estimate is back under the limit;
-- a refund takes from the current window's count, then from the
-- previous one's, never below 0.
--
-- Time going backwards: a start past now is moved back to now, keeping
-- both counts, and written: nothing refills (prev weighs in fully again),
-- and no duration exceeds two windows.

-- earliest returns the least x in [lo, window] at which
-- ceil(p * ((window - x) / window)) <= b, where p > 0, b >= 0 and
-- x = window qualifies. The closed form can be a µs or so off the double
-- arithmetic's answer; the steps move it there (the weight never grows
-- with x).
local function earliest(p, b, lo, window)
  local x = math.ceil(window - window * b / p)
  if x < lo then x = lo elseif x > window then x = window end
  for _ = 1, 64 do
    if x <= lo or math.ceil(p * ((window - (x - 1)) / window)) > b then break end
    x = x - 1
  end
  for _ = 1, 64 do
    if x >= window or math.ceil(p * ((window - x) / window)) <= b then break end
    x = x + 1
  end
  return x
end

-- regrid returns start, cur and prev on a grid of window µs for a state
-- on a grid of w0 µs (see "Other parameters" above).
local function regrid(now, window, start, cur, prev, w0)
  if now < start then
    start = now
  elseif now - start >= w0 then
    if now - start < 2 * w0 then prev = cur else prev = 0 end
    start, cur = start + w0, 0
  end
  if now - start >= window then return now, 0, cur end
  return start, cur, prev
end

local max_debt = 1125899906842624

local function write(consume, key, now, n, allowed, limit, window, start, cur, prev, elapsed, est, dirty, v)
  if consume then
    if n > 0 then
      local c = cur + n
      if c > limit + max_debt then c = limit + max_debt end
      est = est + (c - cur)
      cur = c
    else
      local k = math.min(cur, -n)
      prev = math.max(prev + n + k, 0)
      cur = cur - k
      est = cur + math.ceil(prev * ((window - elapsed) / window))
    end
    dirty = true
  end
  local left = 0
  if cur > 0 then
    left = 2 * window - elapsed
  elseif prev > 0 then
    left = window - elapsed
  end
  if dirty then
    if left > 0 then
      redis.call('SET', key, string.format('%d %d %d %d', start, cur, prev, window), 'PX', string.format('%d', math.ceil(left / 1000) + ttl_margin))
    else
      redis.call('DEL', key)
    end
  elseif v and redis.call('PTTL', key) == -1 then
    if left > 0 then
      redis.call('PEXPIRE', key, string.format('%d', math.ceil(left / 1000) + ttl_margin))
    else
      redis.call('DEL', key)
    end
  end
  local retry = 0
  if not allowed then
    if cur + n <= limit then
      retry = earliest(prev, limit - n - cur, elapsed + 1, window) - elapsed
    else
      retry = window - elapsed + earliest(cur, limit - n, 0, window)
    end
  end
  local remaining = limit - est
  if remaining < 0 then remaining = 0 end
  return remaining, retry, left
end

local function decide(key, now, n, limit, window)
  limit, window = limit + 0, window + 0
  local start, cur, prev, dirty = now, 0, 0, false
  local v = redis.call('GET', key)
  if v then
    local s, c, p, w = string.match(v, '^(-?%d+) (%d+) (%d+) ?(%d*)$')
    if s then
      start, cur, prev = s + 0, c + 0, p + 0
      if w ~= '' and w + 0 ~= window then
        start, cur, prev = regrid(now, window, start, cur, prev, w + 0)
        dirty = true
      end
    else
      cur = math.floor(tonumber(v) or 0)
      if cur ~= cur or cur > limit then
        cur = limit
      elseif cur < 0 then
        cur = 0
      end
      dirty = true
    end
  end
  if now < start then
    start, dirty = now, true
  elseif now - start >= window then
    if now - start < 2 * window then prev = cur else prev = 0 end
    start, cur = start + window, 0
  end
  if cur == 0 and prev == 0 then start = now end
  local elapsed = now - start
  local est = cur + math.ceil(prev * ((window - elapsed) / window))
  local allowed = est + n <= limit
  return allowed, write, allowed, limit, window, start, cur, prev, elapsed, est, dirty, v
end
