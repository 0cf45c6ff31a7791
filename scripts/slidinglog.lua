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
-- refills). When the call is denied or only reports, they are rescored to
-- now, so that durations never exceed the window and stay true.

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

-- Numbers reach redis.call as strings made with string.format('%d'),
-- because Redis converts a Lua number argument with a slow '%.17g'.
local nows = string.format('%d', now)
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - window))
local count = redis.call('ZCARD', key)
local allowed = count + n <= limit
local retry, reset = 0, 0

if allowed and ARGV[3] == '1' then
  local added, i = 0, count
  if n == 1 then
    i = i + 1
    added = redis.call('ZADD', key, nows, string.format('%s:%d', nows, i))
  end
  while added < n do
    local batch = n - added
    if batch > 1000 then batch = 1000 end
    local args = {}
    for j = 1, batch do
      i = i + 1
      args[2 * j - 1] = nows
      args[2 * j] = string.format('%s:%d', nows, i)
    end
    added = added + redis.call('ZADD', key, unpack(args))
  end
  count = count + n
  redis.call('PEXPIRE', key, string.format('%d', math.ceil(window / 1000)))
  reset = window
elseif count > 0 then
  local newest = tonumber(redis.call('ZRANGE', key, '-1', '-1', 'WITHSCORES')[2])
  if newest > now then
    -- The clock went back: entries from the future count as made now.
    local future = redis.call('ZRANGEBYSCORE', key, '(' .. nows, '+inf')
    for first = 1, #future, 1000 do
      local args = {}
      for j = first, math.min(first + 999, #future) do
        args[#args + 1] = nows
        args[#args + 1] = future[j]
      end
      redis.call('ZADD', key, unpack(args))
    end
    newest = now
  end
  if not allowed then
    -- The call fits once the oldest count+n-limit entries have left. When
    -- that is every entry, the last of them is the newest, read above.
    local idx = count + n - limit - 1
    local at = newest
    if idx ~= count - 1 then
      local s = string.format('%d', idx)
      at = tonumber(redis.call('ZRANGE', key, s, s, 'WITHSCORES')[2])
    end
    retry = at + window - now
  end
  reset = newest + window - now
  if redis.call('PTTL', key) == -1 then
    redis.call('PEXPIRE', key, string.format('%d', math.ceil(window / 1000)))
  end
end

local remaining = limit - count
if remaining < 0 then remaining = 0 end
return {allowed and 1 or 0, remaining, retry, reset}
