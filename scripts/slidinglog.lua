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
-- Members are "<t>/<i>", t the entry's score in µs: a score is read from
-- its member's name, as Redis formats a score (WITHSCORES, ZSCORE) with a
-- slow '%.17g' that costs more than half a denied call. Every member named
-- so has score t: entries are only ever added at their name's time (ZADD of
-- an existing name sets the same score), and entries from the future are
-- replaced, not rescored (below). A member named otherwise, like "<µs>:<i>"
-- from earlier versions of this script, has its score read with ZSCORE.
-- New members take i past the set's size, so they are unique; should one
-- exist already (possible only after the clock went back), ZADD reports
-- fewer additions and more members are added until the cost is met. Each
-- write sets the TTL to the window; a key of ours found without a TTL gets
-- one.
--
-- Each call removes the entries that have left the window. A call that
-- would be denied with them all still counted first reads the oldest: when
-- it has not left, none has, and the call skips ZREMRANGEBYSCORE.
--
-- Cost: a string known to hold digits becomes a number by arithmetic
-- (s + 0), sparing a call to tonumber; a number reaches redis.call as a
-- string made with string.format('%d'), because Redis would convert it
-- with a slow '%.17g'.
--
-- Time going backwards: entries newer than now still count (nothing
-- refills). When the call is denied or only reports, they are replaced by
-- as many entries made now, so that durations never exceed the window and
-- stay true.

local key = KEYS[1]
local now = ARGV[1]
if now == '' then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
else
  now = tonumber(now)
end
local n = ARGV[2] + 0
local limit = ARGV[4] + 0
local window = ARGV[5] + 0

-- add logs k entries made now (nows, as a string), named past i.
local function add(nows, i, k)
  local added = 0
  if k == 1 then
    i = i + 1
    added = redis.call('ZADD', key, nows, string.format('%s/%d', nows, i))
  end
  while added < k do
    local batch = k - added
    if batch > 1000 then batch = 1000 end
    local args = {}
    for j = 1, batch do
      i = i + 1
      args[2 * j - 1] = nows
      args[2 * j] = string.format('%s/%d', nows, i)
    end
    added = added + redis.call('ZADD', key, unpack(args))
  end
end

-- scoreAt returns the score of the entry at rank r (a string).
local function scoreAt(r)
  local m = redis.call('ZRANGE', key, r, r)[1]
  local s = string.match(m, '^(-?%d+)/%d+$')
  if s then return s + 0 end
  return redis.call('ZSCORE', key, m) + 0
end

-- Entries at or before cut have left the window. A call that would be
-- denied reads the oldest entry, which its retry_after usually needs; if
-- that one is still in, none has left, and there is nothing to remove.
local cut = now - window
local count = redis.call('ZCARD', key)
local oldest
if count > 0 and count + n > limit then
  oldest = scoreAt('0')
  if oldest <= cut then oldest = nil end
end
if count > 0 and not oldest then
  count = count - redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', cut))
end
local allowed = count + n <= limit
local retry, reset = 0, 0

if allowed and ARGV[3] == '1' then
  add(string.format('%d', now), count, n)
  count = count + n
  redis.call('PEXPIRE', key, string.format('%d', math.ceil(window / 1000)))
  reset = window
elseif count > 0 then
  local newest = oldest
  if count > 1 or not newest then newest = scoreAt('-1') end
  if newest > now then
    -- The clock went back: entries from the future count as made now.
    local nows = string.format('%d', now)
    local moved = redis.call('ZREMRANGEBYSCORE', key, '(' .. nows, '+inf')
    add(nows, count - moved, moved)
    newest = now
    if oldest and oldest > now then oldest = now end
  end
  if not allowed then
    -- The call fits once the oldest count+n-limit entries have left.
    local idx = count + n - limit - 1
    local at = oldest
    if idx == count - 1 then
      at = newest
    elseif idx ~= 0 or not at then
      at = scoreAt(string.format('%d', idx))
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
