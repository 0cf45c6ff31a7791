-- Sliding log: at most ARGV[4] units admitted in any period of ARGV[5] µs.
-- Each admitted unit is one entry in a sorted set, scored by its time in µs;
-- a unit admitted at time s counts while now - s < window.
--
-- KEYS[1]  the limiter key
-- ARGV[1]  now, in µs since the Unix epoch, or "" to read Redis TIME
-- ARGV[2]  cost, whole units >= 1
-- ARGV[3]  "1" to consume the cost when it is allowed, "0" to only report
-- ARGV[4]  limit, units per window
-- ARGV[5]  window, in µs (>= 1000)
-- Reply    {allowed 1|0, remaining units, retry_after µs, reset_after µs}
--
-- Members are "<now µs>:<i>" with i past the set's size, so they are unique;
-- should one exist already (possible only after the clock went back), ZADD
-- reports fewer additions and more members are added until the cost is met.
-- Each write sets the TTL to the window; a key of ours found without a TTL
-- gets one.
--
-- Time going backwards: entries newer than now still count (nothing
-- refills); durations are clamped to the window, never negative.

local key = KEYS[1]
local now = ARGV[1]
if now == '' then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
else
  now = tonumber(now)
end
local n = tonumber(ARGV[2])
local limit = tonumber(ARGV[4])
local window = tonumber(ARGV[5])

local function until_gone(score)
  local d = tonumber(score) + window - now
  if d > window then d = window end
  if d < 0 then d = 0 end
  return d
end

redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local allowed = count + n <= limit
local retry, reset = 0, 0

if allowed and ARGV[3] == '1' then
  local added, i = 0, count
  while added < n do
    local batch = n - added
    if batch > 1000 then batch = 1000 end
    local args = {}
    for j = 1, batch do
      i = i + 1
      args[2 * j - 1] = now
      args[2 * j] = string.format('%d:%d', now, i)
    end
    added = added + redis.call('ZADD', key, unpack(args))
  end
  count = count + n
  redis.call('PEXPIRE', key, math.ceil(window / 1000))
  reset = window
elseif count > 0 then
  if not allowed then
    -- The call fits once the oldest count+n-limit entries have left.
    local idx = count + n - limit - 1
    retry = until_gone(redis.call('ZRANGE', key, idx, idx, 'WITHSCORES')[2])
  end
  reset = until_gone(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
  if redis.call('PTTL', key) == -1 then
    redis.call('PEXPIRE', key, math.ceil(window / 1000))
  end
end

local remaining = limit - count
if remaining < 0 then remaining = 0 end
return {allowed and 1 or 0, remaining, retry, reset}
