-- Token bucket, as the generic cell rate algorithm: a bucket of ARGV[4]
-- tokens that refills one token every ARGV[5] µs and starts full.
--
-- KEYS[1]  the limiter key
-- ARGV[1]  now, in µs since the Unix epoch, or "" to read Redis TIME
-- ARGV[2]  cost, whole tokens >= 1
-- ARGV[3]  "1" to consume the cost when it is allowed, "0" to only report
-- ARGV[4]  burst: the bucket's capacity, in tokens
-- ARGV[5]  refill interval: µs per token (>= 1)
-- Reply    {allowed 1|0, remaining tokens, retry_after µs, reset_after µs}
--
-- State: one integer, the theoretical arrival time (TAT) in µs: the moment
-- the bucket is full again. Tokens at time now = (now + burst*interval - TAT)
-- / interval. Written with SET ... PX to expire when the bucket is full, when
-- it carries no information. The TTL only collects garbage. A value that is
-- not a number is discarded (a full bucket) and the key is rewritten or
-- deleted; a key of ours found without a TTL gets one.
--
-- Cost: a string known to hold digits becomes a number by arithmetic
-- (s + 0), sparing a call to tonumber; a number reaches redis.call as a
-- string made with string.format('%d'), because Redis would convert it
-- with a slow '%.17g'.
--
-- Time going backwards: a TAT past now + burst*interval (more than an empty
-- bucket) is moved back to it and written, so nothing refills and no
-- duration exceeds a full refill.

local key = KEYS[1]
local now = ARGV[1]
if now == '' then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
else
  now = tonumber(now)
end
local n = ARGV[2] + 0
local burst = ARGV[4] + 0
local interval = ARGV[5] + 0
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
if allowed and ARGV[3] == '1' then
  tat = tat + n * interval
  dirty = true
end
local left = tat - now
if dirty then
  if left > 0 then
    redis.call('SET', key, string.format('%d', tat), 'PX', string.format('%d', math.ceil(left / 1000)))
  else
    redis.call('DEL', key)
  end
elseif v and redis.call('PTTL', key) == -1 then
  if left > 0 then
    redis.call('PEXPIRE', key, string.format('%d', math.ceil(left / 1000)))
  else
    redis.call('DEL', key)
  end
end

local retry = 0
if not allowed then retry = allow_at - now end
return {allowed and 1 or 0, math.floor((cap - left) / interval), retry, left}
