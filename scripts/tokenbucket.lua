-- Token bucket, as the generic cell rate algorithm: a bucket of burst
-- tokens that refills one token every p/d µs and starts full.
--
-- A body (the package documentation, "Writing an algorithm", has the
-- contract): decide(key, now, n, burst, p, d), then write, with
--   burst  the bucket's capacity, in tokens
--   p, d   the refill interval, p/d µs per token, in lowest terms, with
--          d <= 2^26 and p < 2^53
--
-- Exact arithmetic: the interval is q + r/d µs (q = floor(p/d), r < d),
-- and times are whole µs plus a fraction f/d. m intervals are
-- m*q + a*r + (b*r)/d for m = a*d + b, whose products stay at most the
-- result or under d^2 <= 2^52, so Lua's doubles keep every one exact (see
-- times). A bucket emptied at 0 has its k-th token back at ceil(k*p/d) µs.
-- Durations in the reply are rounded up to whole µs; remaining is whole
-- tokens, rounded down.
--
-- State: the string "<tat> <f> <p> <d>": the theoretical arrival time
-- (TAT), the moment the bucket is full again, is tat + f/d µs (tat an
-- integer, 0 <= f < d), under the interval p/d. Tokens at time now =
-- burst - ceil((TAT - now) / interval). Written with SET ... PX to expire
-- a margin after the bucket is full, when it carries no information. The
-- TTL only collects garbage.
--
-- Other parameters: the same p and d (any burst) read the TAT as it is.
-- Another interval converts it: the tokens in use at now, ceil((TAT -
-- now) / old interval) (a partly refilled token counts as in use, so the
-- change never admits more), at most burst of them, are in use at the new
-- interval from now, and the key is rewritten at once. A bare integer (the
-- format before intervals were fractions) is a TAT in whole µs under the
-- current interval. Any other value is discarded (a full bucket) and the
-- key is rewritten or deleted; a key of ours found without a TTL gets one.
--
-- Cost: a string known to hold digits becomes a number by arithmetic
-- (s + 0), sparing a call to tonumber; a number reaches redis.call as a
-- string made with string.format('%d'), because Redis would convert it
-- with a slow '%.17g'.
--
-- Time going backwards: a TAT past now + burst*interval (more than an empty
-- bucket) is moved back to it and written, so nothing refills and no
-- duration exceeds a full refill.

-- exact bounds the integers a double holds exactly.
local exact = 9007199254740992

-- times returns m intervals of q + r/d µs as whole µs and a numerator
-- over d.
local function times(m, q, r, d)
  if r == 0 then return m * q, 0 end
  local a = math.floor(m / d)
  local br = (m - a * d) * r
  local w = math.floor(br / d)
  return m * q + a * r + w, br - w * d
end

-- in_use returns ceil((w + f/d) / (q + r/d)) for w >= 0: the float
-- estimate is off by at most one either way, and is corrected exactly.
local function in_use(w, f, q, r, d)
  if r == 0 then return math.ceil(w / q) end
  local k = math.ceil((w + f / d) / (q + r / d))
  while true do
    local kw, kf = times(k, q, r, d)
    if kw > w or (kw == w and kf >= f) then break end
    k = k + 1
  end
  while k > 0 do
    local kw, kf = times(k - 1, q, r, d)
    if kw < w or (kw == w and kf < f) then break end
    k = k - 1
  end
  return k
end

local function write(consume, key, now, n, w, f, nw, nf, remaining, retry, dirty, v, ps, ds)
  if consume then
    w, f, remaining, dirty = nw, nf, remaining - n, true
  end
  -- left: until the bucket is full, in whole µs rounded up
  local left = w
  if f > 0 then left = w + 1 end
  if dirty then
    if left > 0 then
      redis.call('SET', key, string.format('%d %d %s %s', now + w, f, ps, ds), 'PX', string.format('%d', math.ceil(left / 1000) + ttl_margin))
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
  return remaining, retry, left
end

local function decide(key, now, n, burst, ps, ds)
  burst = burst + 0
  local d = ds + 0
  local q = math.floor(ps / d)
  local r = ps - q * d
  local capw, capf = times(burst, q, r, d)
  -- w + f/d: the TAT, from now
  local w, f, dirty = 0, 0, false
  local v = redis.call('GET', key)
  if v then
    local t, tf, vp, vd = string.match(v, '^(%-?%d+) (%d+) (%d+) (%d+)$')
    if t then
      t, tf = t + 0, tf + 0
      if vp == ps and vd == ds then
        if t > -exact and t < exact and tf < d then
          w, f = t - now, tf
        else
          dirty = true
        end
      else
        local op, od = vp + 0, vd + 0
        if t > -exact and t < exact and od >= 1 and od <= 67108864 and op >= 1 and op < exact and tf < od then
          w = t - now
          local used = 0
          if w > 0 or (w == 0 and tf > 0) then
            local oq = math.floor(op / od)
            local orr = op - oq * od
            if (w + tf / od) / (oq + orr / od) > burst + 1 then
              used = burst
            else
              used = math.min(in_use(w, tf, oq, orr, od), burst)
            end
          end
          w, f = times(used, q, r, d)
        end
        dirty = true
      end
    else
      t = tonumber(v)
      if t and t > -exact and t < exact and t == math.floor(t) then
        w = t - now
      else
        dirty = true
      end
    end
  end
  if w < 0 then
    w, f = 0, 0
  elseif w > capw or (w == capw and f > capf) then
    w, f, dirty = capw, capf, true
  end
  local nw, nf = times(n, q, r, d)
  nw, nf = w + nw, f + nf
  if nf >= d then nw, nf = nw + 1, nf - d end
  local allowed = nw < capw or (nw == capw and nf <= capf)
  local retry = 0
  if not allowed then
    retry = nw - capw
    if nf > capf then retry = retry + 1 end
  end
  return allowed, write, w, f, nw, nf, burst - in_use(w, f, q, r, d), retry, dirty, v, ps, ds
end
