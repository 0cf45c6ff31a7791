-- Sliding log: at most limit units admitted in any period of window µs.
-- Each admitted unit is one entry in a sorted set, scored by its time in µs;
-- a unit admitted at time s counts while now - s < window.
--
-- A body (the package documentation, "Writing an algorithm", has the
-- contract): decide(key, now, n, limit, window), then write, with
--   limit   units per window
--   window  in µs (>= 1000)
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
-- write sets the TTL to the window and a margin; a key of ours found
-- without a TTL gets one, and one whose TTL ends more than half the margin
-- before its newest entry leaves the window (the window has grown since
-- the TTL was set) gets a longer one. The TTL runs on Redis's clock and
-- now may come from the limiter's: should the two drift apart by more than
-- half the margin, denied calls extend the TTL too, which costs a command
-- and changes no decision.
--
-- Other parameters (the same key read with another limit or window): the
-- entries are kept, and the limit and window in force judge them, as
-- above. Each call removes the entries that have left the window then in
-- force, so a shorter window drops those past it at once; a longer one
-- counts the entries still held: those the shorter window held at its
-- last call, never those removed before, and none once the key has
-- expired (a margin after its newest entry left the shorter window, when
-- all had). The TTL grows as above to keep the entries a longer window
-- still counts.
--
-- Each call removes the entries that have left the window, before it
-- decides: they no longer count, so removing them changes no decision. A call that
-- would be denied with them all still counted first reads the oldest: when
-- it has not left, none has, and the call skips ZREMRANGEBYSCORE.
--
-- Debit and Refund (write with consume set whatever decide said, and n
-- negative for a refund): a debit logs min(n, limit) entries made now,
-- past the limit if need be, and the set keeps its 2*limit newest entries,
-- removing the oldest: whether a call fits depends only on the newest
-- limit entries, so no decision changes, and the set stays bounded. The
-- key denies until enough of them have left the window. A refund removes
-- the newest -n entries (all of them at most, and then the key); the
-- following decision sets a missing TTL. decide takes any n up to 2^50.
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

-- add logs k entries made now (nows, as a string) at key, named past i.
local function add(key, nows, i, k)
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

-- scoreAt returns the score of the entry of key at rank r (a string).
local function scoreAt(key, r)
  local m = redis.call('ZRANGE', key, r, r)[1]
  local s = string.match(m, '^(-?%d+)/%d+$')
  if s then return s + 0 end
  return redis.call('ZSCORE', key, m) + 0
end

local function write(consume, key, now, n, allowed, limit, window, count, oldest)
  local retry, reset = 0, 0
  if consume and n < 0 then
    -- A refund: the newest -n entries go.
    local k = math.min(-n, count)
    if k == count then
      if count > 0 then redis.call('DEL', key) end
    elseif k > 0 then
      redis.call('ZREMRANGEBYRANK', key, string.format('%d', -k), '-1')
    end
    count = count - k
  elseif consume then
    local k = math.min(n, limit)
    add(key, string.format('%d', now), count, k)
    count = count + k
    if count > 2 * limit then
      redis.call('ZREMRANGEBYRANK', key, '0', string.format('%d', count - 2 * limit - 1))
      count = 2 * limit
    end
    redis.call('PEXPIRE', key, string.format('%d', math.ceil(window / 1000) + ttl_margin))
    reset = window
  elseif count > 0 then
    local newest = oldest
    if count > 1 or not newest then newest = scoreAt(key, '-1') end
    if newest > now then
      -- The clock went back: entries from the future count as made now.
      local nows = string.format('%d', now)
      local moved = redis.call('ZREMRANGEBYSCORE', key, '(' .. nows, '+inf')
      add(key, nows, count - moved, moved)
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
        at = scoreAt(key, string.format('%d', idx))
      end
      retry = at + window - now
    end
    reset = newest + window - now
    local ttl = redis.call('PTTL', key)
    if ttl == -1 then
      redis.call('PEXPIRE', key, string.format('%d', math.ceil(window / 1000) + ttl_margin))
    elseif ttl + ttl_margin / 2 < math.ceil(reset / 1000) + ttl_margin then
      -- Set by a write under a shorter window: the key must live until
      -- its newest entry leaves this one.
      redis.call('PEXPIRE', key, string.format('%d', math.ceil(reset / 1000) + ttl_margin))
    end
  end
  local remaining = limit - count
  if remaining < 0 then remaining = 0 end
  return remaining, retry, reset
end

local function decide(key, now, n, limit, window)
  limit, window = limit + 0, window + 0
  -- Entries at or before cut have left the window. A call that would be
  -- denied reads the oldest entry, which its retry_after usually needs; if
  -- that one is still in, none has left, and there is nothing to remove.
  local cut = now - window
  local count = redis.call('ZCARD', key)
  local oldest
  if count > 0 and count + n > limit then
    oldest = scoreAt(key, '0')
    if oldest <= cut then oldest = nil end
  end
  if count > 0 and not oldest then
    count = count - redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', cut))
  end
  local allowed = count + n <= limit
  return allowed, write, allowed, limit, window, count, oldest
end
