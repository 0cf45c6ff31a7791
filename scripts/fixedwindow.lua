-- Fixed window: at most limit units per window of window µs. A key's window
-- opens at the first call it admits and closes window µs later; the next
-- admitted call after that opens a new one.
--
-- A body (the package documentation, "Writing an algorithm", has the
-- contract): decide(key, now, n, limit, window), then write, with
--   limit   units per window
--   window  in µs (>= 1000)
--
-- State: the string "<window end µs> <count> <window µs>", the window
-- length being the one the end was set with, written with SET ... PX so it
-- expires a margin after its window closes. The TTL only collects garbage:
-- decisions read the stored end. The form "<window end µs> <count>" of
-- earlier versions reads as written with the current window. A value in
-- any other form (a bare counter left by INCR-based code, say) counts as
-- that many units in a window opening now, and is rewritten with a TTL
-- even when the call is denied. A key of ours found without a TTL gets
-- one.
--
-- Other parameters (the same key read with another limit or window): the
-- count and the window's start are kept. The limit in force judges the
-- count, so remaining is limit - count, at least 0. A window still open
-- that was written with another length ends at its start plus the current
-- length, and the key is rewritten (its TTL follows the new end) even when
-- the call is denied; should that end be past already, the window is over
-- and the key is deleted unless the call opens a new one. A window that
-- had closed stays closed.
--
-- Cost: a string known to hold digits becomes a number by arithmetic
-- (s + 0), sparing a call to tonumber; a number reaches redis.call as a
-- string made with string.format('%d'), because Redis would convert it
-- with a slow '%.17g'.
--
-- Debit and Refund (write with n past what decide allowed, or negative):
-- the count grows past the limit, up to limit + max_debt (2^50), and the
-- key denies until its window ends; a refund lowers it, never below 0,
-- and a count of 0 deletes the key.
--
-- Time going backwards: a stored end past now + window is moved back to it
-- and written, so no count is forgotten, nothing refills, and the window
-- ends no later than a full window from now.

local max_debt = 1125899906842624

local function write(consume, key, now, n, allowed, limit, window, wend, count, dirty, v)
  if consume then
    count = count + n
    if count < 0 then
      count = 0
    elseif count > limit + max_debt then
      count = limit + max_debt
    end
    dirty = true
  end
  local left = wend - now
  if dirty then
    if count > 0 then
      redis.call('SET', key, string.format('%d %d %d', wend, count, window), 'PX', string.format('%d', math.ceil(left / 1000) + ttl_margin))
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

local function decide(key, now, n, limit, window)
  limit, window = limit + 0, window + 0
  local wend, count, dirty = 0, 0, false
  local v = redis.call('GET', key)
  if v then
    local e, c, w = string.match(v, '^(-?%d+) (%d+) ?(%d*)$')
    if e then
      wend, count = e + 0, c + 0
      if w ~= '' and w + 0 ~= window and wend > now then
        -- An open window written with another length: it keeps its start.
        wend, dirty = wend - w + window, true
        if wend <= now then
          -- It is over: the key holds nothing (v = false), and write
          -- deletes it unless the call opens a new window.
          wend, count, v = now + window, 0, false
        end
      end
    else
      count = math.floor(tonumber(v) or 0)
      if count ~= count or count < 0 or count > limit then count = limit end
      wend, dirty = now + window, true
    end
  end
  if wend <= now then
    wend, count = now + window, 0
  elseif wend > now + window then
    wend, dirty = now + window, true
  end
  local allowed = count + n <= limit
  return allowed, write, allowed, limit, window, wend, count, dirty, v
end
