-- Token bucket, as the generic cell rate algorithm: a bucket of burst
-- tokens that refills one token every interval µs and starts full.
--
-- A body (the package documentation, "Writing an algorithm", has the
-- contract): decide(key, now, n, burst, interval), then write, with
--   burst     the bucket's capacity, in tokens
--   interval  refill interval: µs per token (>= 1)
--
-- State: one integer, the theoretical arrival time (TAT) in µs: the moment
-- the bucket is full again. Tokens at time now = (now + burst*interval - TAT)
-- / interval. Written with SET ... PX to expire a margin after the bucket
-- is full, when it carries no information. The TTL only collects garbage.
-- A value that is not a number is discarded (a full bucket) and the key is
-- rewritten or deleted; a key of ours found without a TTL gets one.
--
-- Cost: a string known to hold digits becomes a number by arithmetic
-- (s + 0), sparing a call to tonumber; a number reaches redis.call as a
-- string made with string.format('%d'), because Redis would convert it
-- with a slow '%.17g'.
--
-- Time going backwards: a TAT past now + burst*interval (more than an empty
-- bucket) is moved back to it and written, so nothing refills and no
-- duration exceeds a full refill.

local function write(consume, key, now, n, allowed, interval, cap, tat, allow_at, dirty, v)
  if consume then
    tat = tat + n * interval
    dirty = true
  end
  local left = tat - now
  if dirty then
    if left > 0 then
      redis.call('SET', key, string.format('%d', tat), 'PX', string.format('%d', math.ceil(left / 1000) + ttl_margin))
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
  if not allowed then retry = allow_at - now end
  return math.floor((cap - left) / interval), retry, left
end

local function decide(key, now, n, burst, interval)
  interval = interval + 0
  local cap = burst * interval
  local tat, dirty = now, false
  local v = redis.call('GET', key)
  if v then
    tat = tonumber(v)
    if not tat or tat ~= tat then
      tat, dirty = now, true
    end
  end
  if tat < now then
    tat = now
  elseif tat > now + cap then
    tat, dirty = now + cap, true
  end
  local allow_at = tat + n * interval - cap
  local allowed = allow_at <= now
  return allowed, write, allowed, interval, cap, tat, allow_at, dirty, v
end
