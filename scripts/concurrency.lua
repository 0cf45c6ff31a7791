-- Concurrency: at most limit leases held at once on a key. A lease ends
-- when it is released or at its expiry, ttl µs after it was taken or last
-- extended.
--
-- KEYS[1]  a sorted set of the leases held: member the lease's token,
--          score its expiry in µs since the Unix epoch
-- ARGV[1]  now, µs since the Unix epoch, or '' to read Redis TIME
-- ARGV[2]  the mode: 'a' acquire, 'e' extend, 'r' release
-- ARGV[3]  the lease's token: 32 hex digits, unguessable
-- ARGV[4]  ttl, µs (>= 1000)
-- ARGV[5]  limit, leases (>= 1)
-- ttl_margin, ms, is defined on a line before this header.
--
-- Reply:
--   'a'  {allowed 1|0, free slots after, retry_after µs, reset_after µs}:
--        retry_after, when denied, is how long until a slot frees by
--        expiry (> 0): the earliest lease's, or, when the key holds more
--        leases than limit (a smaller limit on a key taken under a larger
--        one), that of the one whose end leaves limit - 1; reset_after
--        how long until the last expires
--        (0 when none is held)
--   'e'  1 when the lease was held and now expires at now + ttl, else 0
--        (it was released or had expired: it is not taken again)
--   'r'  1 when the lease was held and is now released, else 0
--
-- Acquire and extend first remove the leases that have expired (expiry <=
-- now), so the set never holds more than the largest limit it was used
-- with, and set the key's TTL to a margin past the last expiry: every key
-- has a TTL, which only collects garbage (expiries decide). Release only
-- removes its own token; the key's TTL, set for a later expiry, stays
-- valid.
--
-- Other parameters (the same key with another limit or ttl): the leases
-- held count against the limit in force, free slots never below 0; each
-- lease keeps the expiry it was given.
--
-- Cost: numbers reach redis.call as strings made with string.format('%d'),
-- as Redis would convert them with a slow '%.17g'.
--
-- Time going backwards: leases keep their expiries, so none is freed and
-- none lasts longer than it was given; durations stay positive, and may
-- exceed ttl by as much as the clock went back.

local key, mode, token = KEYS[1], ARGV[2], ARGV[3]
if mode == 'r' then
  return redis.call('ZREM', key, token)
end

local now = ARGV[1]
if now == '' then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
else
  now = tonumber(now)
end
local ttl, limit = ARGV[4] + 0, ARGV[5] + 0
local expiry = string.format('%d', now + ttl)

redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now))

-- last returns how long until the last lease held expires, after setting
-- the key's TTL a margin past it; 0 when none is held.
local function last()
  local l = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #l == 0 then
    return 0
  end
  local left = l[2] - now
  redis.call('PEXPIRE', key, string.format('%d', math.ceil(left / 1000) + ttl_margin))
  return left
end

if mode == 'e' then
  if not redis.call('ZSCORE', key, token) then
    return 0
  end
  redis.call('ZADD', key, 'XX', expiry, token)
  last()
  return 1
end

local held = redis.call('ZCARD', key)
local allowed, retry = held < limit, 0
if allowed then
  redis.call('ZADD', key, expiry, token)
  held = held + 1
else
  -- A slot frees once held - limit + 1 leases have ended (more than one
  -- when a smaller limit reads a key taken under a larger one).
  local at = string.format('%d', held - limit)
  retry = redis.call('ZRANGE', key, at, at, 'WITHSCORES')[2] - now
end
local reset = last()
local free = limit - held
if free < 0 then
  free = 0
end
return {allowed and 1 or 0, free, retry, reset}
