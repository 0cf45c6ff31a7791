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
-- burst - ceil((TAT - now) / interval). When a smaller burst capped the
-- tokens in use, "<tat> <f> <p> <d> <du> <burst>": tat + du µs is the
-- uncapped TAT, rounded up to a whole µs, which counts every token in use,
-- and burst the cap (the burst that wrote it). At most 84 characters: 200
-- bytes of MEMORY USAGE at the key of the longest IPv6 address. Written
-- with SET ... PX to expire a margin after the uncapped TAT, when the
-- state carries no information. The TTL only collects garbage.
--
-- Other parameters. The same p, d and burst read the state as it is:
-- decisions use the TAT, and the uncapped TAT drains beside it, at the
-- same rate, and grows by what each call consumes. Another burst with
-- the same p and d takes the uncapped TAT, capped at its burst (the
-- fraction of a partly refilled token kept). Another interval converts:
-- the tokens in use at now, by the uncapped TAT, ceil((TATu - now) / old
-- interval) (a partly refilled token counts as in use, so the change never
-- admits more), are in use at the new interval from now, at most burst
-- of them in the TAT. Either way the key is rewritten at once, even by a
-- call that is denied or only peeks, so the new rate refills from the
-- first decision under it. Tokens past a burst are so remembered, not
-- forgotten: a key that goes back to a larger burst finds them in use,
-- and no sequence of changes admits more than the largest burst and rate
-- allow. The uncapped TAT is kept at most max_wait (MaxWindow) away, and
-- another interval takes over at most 2^50 tokens of it. A
-- bare integer (the format before intervals were fractions) is a TAT in
-- whole µs under the current interval. Any other value is discarded (a
-- full bucket) and the key is rewritten or deleted; a key of ours found
-- without a TTL gets one.
--
-- Cost: a string known to hold digits becomes a number by arithmetic
-- (s + 0), sparing a call to tonumber; a number reaches redis.call as a
-- string made with string.format('%d'), because Redis would convert it
-- with a slow '%.17g'.
--
-- Debit and Refund (write with consume set whatever decide said, and n
-- negative for a refund): a debit moves the TAT and the uncapped TAT by n
-- intervals, each capped at max_wait (MaxWindow) from now, so the bucket
-- owes what it has not got and denies until the debt has refilled at the
-- rate; no duration exceeds MaxWindow. A key whose TAT is past now +
-- burst*interval is in debt, and says so by a negative burst in the
-- six-number form (the uncapped TAT as above): "<tat> <f> <p> <d> <du>
-- -<burst>". A refund moves both back by -n intervals, never before now
-- (a full bucket). decide takes any n up to 2^50: n intervals of more
-- than max_wait count as max_wait + 1 µs, which every write caps anyway.
-- The debt belongs to its burst and interval: other parameters read the
-- key as above, the tokens in use capped at their burst.
--
-- Time going backwards: a TAT past now + burst*interval (more than an empty
-- bucket) is moved back to it and written, so nothing refills and no
-- duration exceeds a full refill; the uncapped TAT stays where it is. A
-- key in debt is moved back only past now + max_wait; once a call finds
-- its debt repaid, the key is rewritten without the mark.

-- exact bounds the integers a double holds exactly.
local exact = 9007199254740992

-- max_wait is MaxWindow in µs: the longest that tokens past a smaller
-- burst are remembered.
local max_wait = 315360000000000

-- max_tokens (2^50) bounds the tokens in use that another interval takes
-- over.
local max_tokens = 1125899906842624

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

-- ttl_of returns the TTL, in ms, of a state whose uncapped TAT is
-- left µs away.
local function ttl_of(left)
  return string.format('%d', math.ceil(left / 1000) + ttl_margin)
end

local function write(consume, key, now, n, s)
  local w, f, wu, fu, remaining, dirty = s.w, s.f, s.wu, s.fu, s.remaining, s.dirty
  local d = s.d
  if consume then
    dirty = true
    if n > 0 then
      w, f = s.nw, s.nf
      wu, fu = wu + s.tw, fu + s.tf
      if fu >= d then wu, fu = wu + 1, fu - d end
      if w > max_wait then w, f = max_wait, 0 end
      if wu > max_wait then wu, fu = max_wait, 0 end
    else
      -- A refund: n intervals back (s.tw + s.tf/d), never before now.
      w, f = w - s.tw, f - s.tf
      if f < 0 then w, f = w - 1, f + d end
      if w < 0 then w, f = 0, 0 end
      wu, fu = wu - s.tw, fu - s.tf
      if fu < 0 then wu, fu = wu - 1, fu + d end
      if wu < 0 then wu, fu = 0, 0 end
    end
    remaining = remaining - n
    if remaining < 0 then remaining = 0 elseif remaining > s.burst then remaining = s.burst end
  end
  local debt = w > s.capw or (w == s.capw and f > s.capf)
  -- left: until the bucket is full, in whole µs rounded up; lu: until
  -- the uncapped TAT
  local left, lu = w, wu
  if f > 0 then left = w + 1 end
  if fu > 0 then lu = wu + 1 end
  if dirty then
    if lu <= 0 then
      redis.call('DEL', key)
    elseif wu == w and fu == f and not debt then
      redis.call('SET', key, string.format('%d %d %s %s', now + w, f, s.ps, s.ds), 'PX', ttl_of(lu))
    else
      local b = s.burst
      if debt then b = -b end
      redis.call('SET', key, string.format('%d %d %s %s %d %d', now + w, f, s.ps, s.ds, lu - w, b), 'PX', ttl_of(lu))
    end
  elseif s.v and redis.call('PTTL', key) == -1 then
    if lu > 0 then
      redis.call('PEXPIRE', key, ttl_of(lu))
    else
      redis.call('DEL', key)
    end
  end
  return remaining, s.retry, left
end

-- valid reports whether a stored TAT t + tf/d is one this script wrote.
local function valid(t, tf, d)
  return t > -exact and t < exact and tf < d
end

local function decide(key, now, n, burst, ps, ds)
  burst = burst + 0
  local d = ds + 0
  local q = math.floor(ps / d)
  local r = ps - q * d
  local capw, capf = times(burst, q, r, d)
  -- w + f/d: the TAT, from now; wu + fu/d: the uncapped TAT, from now
  local w, f, wu, fu, dirty, debt = 0, 0, nil, nil, false, false
  local v = redis.call('GET', key)
  if v then
    local t, tf, vp, vd, du, vb = string.match(v, '^(%-?%d+) (%d+) (%d+) (%d+) (%d+) (%-?%d+)$')
    if not t then
      t, tf, vp, vd = string.match(v, '^(%-?%d+) (%d+) (%d+) (%d+)$')
    end
    if t then
      t, tf = t + 0, tf + 0
      local tu, tuf = t, tf
      if du then tu, tuf = t + du, 0 end
      if vp == ps and vd == ds then
        if valid(t, tf, d) and valid(tu, tuf, d) then
          w, f, wu, fu = t - now, tf, tu - now, tuf
          if vb then
            vb = vb + 0
            if vb < 0 then vb, debt = -vb, true end
            if vb ~= burst then
              -- Another burst: the capped TAT is the uncapped one, capped
              -- below at this burst, which owes no debt of another.
              w, f, dirty, debt = wu, fu, true, false
            end
          end
        else
          dirty = true
        end
      else
        local op, od = vp + 0, vd + 0
        if valid(tu, tuf, od) and od >= 1 and od <= 67108864 and op >= 1 and op < exact then
          local ow = tu - now
          local used = 0
          if ow > 0 or (ow == 0 and tuf > 0) then
            local oq = math.floor(op / od)
            local orr = op - oq * od
            -- At most 2^50 tokens (MaxDebit), or max_wait of them: at the
            -- fastest rates max_wait holds more tokens than a double
            -- counts exactly, and in_use would never settle.
            local most = max_tokens
            if max_wait / (q + r / d) <= max_tokens then
              most = math.min(in_use(max_wait, 0, q, r, d), max_tokens)
            end
            if (ow + tuf / od) / (oq + orr / od) > most + 1 then
              used = most
            else
              used = math.min(in_use(ow, tuf, oq, orr, od), most)
            end
          end
          wu, fu = times(used, q, r, d)
          w, f = times(math.min(used, burst), q, r, d)
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
  if not wu then wu, fu = w, f end
  if w < 0 then w, f = 0, 0 end
  if wu < 0 then wu, fu = 0, 0 end
  if w > capw or (w == capw and f > capf) then
    if not debt then
      w, f, dirty = capw, capf, true
    elseif w > max_wait then
      w, f, dirty = max_wait, 0, true
    end
  elseif debt then
    -- Repaid: rewritten without the mark, which would let a clock going
    -- back hold the key past a full refill.
    debt, dirty = false, true
  end
  if wu < w or (wu == w and fu < f) then
    wu, fu = w, f
  elseif wu > max_wait then
    wu, fu, dirty = max_wait, 0, true
  end
  local tw, tf = times(n, q, r, d)
  if tw > max_wait then tw, tf = max_wait + 1, 0 end
  local nw, nf = w + tw, f + tf
  if nf >= d then nw, nf = nw + 1, nf - d end
  local allowed = nw < capw or (nw == capw and nf <= capf)
  local retry = 0
  if not allowed then
    retry = nw - capw
    if nf > capf then retry = retry + 1 end
  end
  -- In debt the bucket is empty; in_use would count up to MaxWindow of
  -- tokens, more than a double holds exactly at the fastest rates.
  local remaining = 0
  if not debt then remaining = burst - in_use(w, f, q, r, d) end
  return allowed, write, {
    w = w, f = f, wu = wu, fu = fu, nw = nw, nf = nf, tw = tw, tf = tf, d = d,
    capw = capw, capf = capf, remaining = remaining, retry = retry, dirty = dirty,
    v = v, ps = ps, ds = ds, burst = burst,
  }
end
