package redislimit

import (
	_ "embed"
	"fmt"
	"math"
	"math/big"
	"time"
)

//go:embed scripts/tokenbucket.lua
var tokenBucketLua string

// TokenBucket returns an [Algorithm] with a bucket of burst tokens per key
// that starts full and refills continuously at rate tokens every per, never
// above burst. A call of cost n takes n tokens.
//
// rate and burst must be at least 1 and at most 2^50, per at least a
// millisecond, and burst×per/rate at most [MaxWindow]; otherwise [New]
// returns an error wrapping [ErrInvalidConfig]. per counts in whole µs.
//
// The arithmetic is exact: over any period t the bucket admits at most
// burst + ⌊rate×t/per⌋ units, and a bucket emptied at time 0 has its k-th
// token back ⌈k×per/rate⌉ µs later, whatever the rate. The one exception
// is a rate that, divided by its greatest common divisor with per in µs,
// exceeds 2^26 (67,108,864; only rates that large): the refill interval
// is then the closest fraction above per/rate whose denominator is at
// most 2^26, less than 2^-26 µs longer, so the rate is slower than asked
// by a factor under rate/(per in µs)/2^26 (under 1.5e-8 for any rate up
// to one token per µs), never faster. [Result.RetryAfter] and
// [Result.ResetAfter] are rounded up to whole µs, [Result.Remaining] down
// to whole tokens.
//
// A key keeps its usage when a token bucket with other parameters decides
// on it ([Limiter.Using], or a Limiter with the same prefix): the tokens
// in use, a partly refilled one counted whole, stay in use, at most the
// new burst of them, and refill at the new rate from then on. Used 8 of a
// burst of 10, then a burst of 100: 92 remain. Used 58 of 100, then a
// burst of 10 at 10 a minute: none remain, and the next token comes 6s
// later. Tokens past a smaller burst are remembered, draining behind the
// ones in the bucket: a key that goes back to a larger burst finds them
// in use, so no sequence of changes admits more than the largest burst and
// rate allow. With the same refill interval per/rate, the usage carries
// over exactly; another interval takes over at most 2^50 tokens in use.
// State per key: a string of four integers, or six while tokens past a
// smaller burst are remembered or the key is in debt; at most 200 bytes
// of Redis memory with the key of an IPv6 address.
//
// Debit and Refund: [Limiter.Debit] takes n tokens whether or not the
// bucket holds them, and the key owes the rest: it denies until the debt
// has refilled at the rate, then refills as usual. The debt is bounded by
// time, not tokens: the bucket owes at most what it refills in
// [MaxWindow], so RetryAfter and ResetAfter never exceed it. Debit 5 on a
// burst of 3 refilling one token every 2s: 2 are owed, and the next token
// is back 6s later. [Limiter.Refund] puts n tokens back, never above
// burst. A debt belongs to its parameters: a key read with another burst
// or rate carries its tokens in use over as above, at most the new burst
// of them, and a clock going back keeps a debt where it was (at most
// MaxWindow away) where it would cap a bucket's usage at a full refill.
func TokenBucket(rate int, per time.Duration, burst int) Algorithm {
	return tokenBucket{rate: rate, per: per, burst: burst}
}

type tokenBucket struct {
	rate  int
	per   time.Duration
	burst int
}

func (tokenBucket) Name() string  { return "tb" }
func (tokenBucket) title() string { return "TokenBucket" }
func (a tokenBucket) Limit() int  { return a.burst }
func (tokenBucket) Body() string  { return tokenBucketLua }

// Window returns the time an empty bucket takes to fill, rounded up to a
// whole µs; 0 for parameters that Args refuses.
func (a tokenBucket) Window() time.Duration {
	if a.valid() != nil {
		return 0
	}
	return micros(ceilMicros(a.interval().times(int64(a.burst))))
}

func (a tokenBucket) Args() ([]any, error) { return a.appendArgs(nil) }

func (a tokenBucket) appendArgs(dst []any) ([]any, error) {
	if err := a.valid(); err != nil {
		return nil, err
	}
	// p = q×d + r is per/g for an exact interval, under 2^49; an
	// approximated one is under 2^23 µs (rate over 2^26), so p < 2^49.
	iv := a.interval()
	return append(dst, a.burst, iv.q*iv.d+iv.r, iv.d), nil
}

// valid checks the parameters, returning an error wrapping
// [ErrInvalidConfig] when they are out of range.
func (a tokenBucket) valid() error {
	if err := checkUnits(a.title(), "rate", a.rate, maxUnits); err != nil {
		return err
	}
	if err := checkUnits(a.title(), "burst", a.burst, maxUnits); err != nil {
		return err
	}
	if err := checkSpan(a.title(), "per", a.per); err != nil {
		return err
	}
	if !a.interval().fills(int64(a.burst), maxMicros) {
		return fmt.Errorf("%w: token bucket: burst %d takes longer than MaxWindow to refill", ErrInvalidConfig, a.burst)
	}
	return nil
}

const maxMicros = int64(MaxWindow / time.Microsecond)

// interval returns the refill interval, per/rate µs. It needs rate ≥ 1
// and per ≥ 1µs.
func (a tokenBucket) interval() interval {
	per, rate := a.per.Microseconds(), int64(a.rate)
	if iv, ok := exactInterval(per, rate); ok {
		return iv
	}
	return approxInterval(big.NewInt(per), big.NewInt(rate), false)
}

// exactInterval returns num/den µs (both positive) as an interval, and
// false when its denominator in lowest terms exceeds maxDenom.
func exactInterval(num, den int64) (interval, bool) {
	g := gcd(num, den)
	n, d := num/g, den/g
	return interval{q: n / d, r: n % d, d: d}, d <= maxDenom
}

// NewLocalState implements [LocalAlgorithm]: the burst is divided among
// instances, and the refill interval multiplied by them, or shortened so
// that an empty bucket still fills within [MaxWindow].
func (a tokenBucket) NewLocalState(instances int) LocalState {
	burst := localUnits(a.burst, instances)
	iv := a.interval()
	if instances > 1 {
		iv = localInterval(a.per.Microseconds(), int64(a.rate), int64(instances), burst)
	}
	// A TAT far in the past: full at any clock, before 1970 too.
	return &tokenBucketState{burst: burst, iv: iv, tat: math.MinInt64 / 4, tatU: math.MinInt64 / 4}
}

// localInterval returns per×instances/rate µs as an interval, or
// MaxWindow/burst when burst such intervals would take longer.
func localInterval(per, rate, instances, burst int64) interval {
	if per <= math.MaxInt64/instances {
		if iv, ok := exactInterval(per*instances, rate); ok && iv.fills(burst, maxMicros) {
			return iv
		}
	}
	num := new(big.Int).Mul(big.NewInt(per), big.NewInt(instances))
	den := big.NewInt(rate)
	// Checked before the interval can overflow, and again once rounded.
	if new(big.Int).Mul(num, big.NewInt(burst)).Cmp(new(big.Int).Mul(big.NewInt(maxMicros), den)) <= 0 {
		if iv := approxInterval(num, den, false); iv.fills(burst, maxMicros) {
			return iv
		}
	}
	return approxInterval(big.NewInt(maxMicros), big.NewInt(burst), true)
}

// maxDenom bounds the denominator of a refill interval, so that every
// product in the script's arithmetic stays below 2^53 and exact in Lua's
// doubles: see interval.times.
const maxDenom = 1 << 26

// interval is a refill interval of q + r/d µs per token, 0 ≤ r < d ≤
// maxDenom, r/d in lowest terms (so d is 1 for a whole number of µs).
// Times in the same arithmetic are whole µs w plus a fraction f/d, 0 ≤ f < d.
type interval struct{ q, r, d int64 }

// times returns m intervals, m ≥ 0, as w + f/d µs. With m×interval below
// 2^53 no intermediate exceeds it either: m×q and a×r are at most the
// result, and b×r < d² ≤ 2^52. The script computes the same.
func (iv interval) times(m int64) (w, f int64) {
	if iv.r == 0 {
		return m * iv.q, 0
	}
	a, b := m/iv.d, m%iv.d
	br := b * iv.r
	return m*iv.q + a*iv.r + br/iv.d, br % iv.d
}

// fills reports whether burst intervals take at most limit µs.
func (iv interval) fills(burst, limit int64) bool {
	if iv.q > 0 && burst > limit/iv.q {
		return false
	}
	w, f := iv.times(burst)
	return w < limit || w == limit && f == 0
}

// inUse returns ⌈(w + f/d) / interval⌉ for w ≥ 0: the tokens that a bucket
// whose TAT is w + f/d µs away lacks, a partly refilled one included. The
// float estimate is off by at most one either way and is corrected exactly,
// as the script does.
func (iv interval) inUse(w, f int64) int64 {
	if iv.r == 0 {
		return (w + iv.q - 1) / iv.q
	}
	k := int64(math.Ceil((float64(w) + float64(f)/float64(iv.d)) / (float64(iv.q) + float64(iv.r)/float64(iv.d))))
	for !iv.reaches(k, w, f) {
		k++
	}
	for k > 0 && iv.reaches(k-1, w, f) {
		k--
	}
	return k
}

// reaches reports whether k intervals span at least w + f/d µs.
func (iv interval) reaches(k, w, f int64) bool {
	kw, kf := iv.times(k)
	return kw > w || kw == w && kf >= f
}

// ceilMicros rounds w + f/d µs up to whole µs.
func ceilMicros(w, f int64) int64 {
	if f > 0 {
		return w + 1
	}
	return w
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// approxInterval returns num/den µs (both positive) as an interval: exact
// when its denominator in lowest terms is at most maxDenom; otherwise the
// closest fraction with such a denominator above num/den, or below it when
// down is set (for a num/den of at least 1/maxDenom, so that it is not 0). The two fractions that bracket num/den most closely are a
// convergent of its continued fraction and a semiconvergent; they are
// neighbours among the fractions with denominators up to maxDenom, so
// they differ by under 2^-26, and so does either from num/den.
func approxInterval(num, den *big.Int, down bool) interval {
	g := new(big.Int).GCD(nil, nil, num, den)
	n, d := new(big.Int).Quo(num, g), new(big.Int).Quo(den, g)
	limit := big.NewInt(maxDenom)
	if d.Cmp(limit) > 0 {
		// p0/q0 and p1/q1 are the last two convergents with q1 ≤ maxDenom.
		p0, q0, p1, q1 := big.NewInt(0), big.NewInt(1), big.NewInt(1), big.NewInt(0)
		x, y := new(big.Int).Set(n), new(big.Int).Set(d)
		a, t := new(big.Int), new(big.Int)
		for y.Sign() != 0 {
			a.Quo(x, y)
			q2 := new(big.Int).Add(q0, t.Mul(a, q1))
			if q2.Cmp(limit) > 0 {
				break
			}
			p2 := new(big.Int).Add(p0, t.Mul(a, p1))
			p0, q0, p1, q1 = p1, q1, p2, q2
			x, y = y, new(big.Int).Sub(x, t.Mul(a, y))
		}
		k := new(big.Int).Quo(new(big.Int).Sub(limit, q0), q1)
		sp := new(big.Int).Add(p0, new(big.Int).Mul(k, p1))
		sq := new(big.Int).Add(q0, new(big.Int).Mul(k, q1))
		// p1/q1 lies on one side of n/d, sp/sq on the other.
		above := new(big.Int).Mul(p1, d).Cmp(new(big.Int).Mul(n, q1)) > 0
		if above != down {
			n, d = p1, q1
		} else {
			n, d = sp, sq
		}
	}
	q, r := new(big.Int).QuoRem(n, d, new(big.Int))
	return interval{q: q.Int64(), r: r.Int64(), d: d.Int64()}
}

// tokenBucketState is scripts/tokenbucket.lua in memory.
type tokenBucketState struct {
	burst int64
	iv    interval
	tat   int64 // when the bucket is full again: tat + frac/iv.d µs
	frac  int64
	// The uncapped TAT, tatU + fracU/iv.d µs: the TAT, or, when a
	// smaller burst capped the tokens in use or the key is in debt, a
	// later whole µs.
	tatU, fracU int64
	// debt is set while a debit holds the TAT past a full refill: the
	// TAT is then capped at MaxWindow from now, not at the burst.
	debt bool
}

// before reports whether w + f/d µs is before w2 + f2/d.
func before(w, f, w2, f2 int64) bool { return w < w2 || w == w2 && f < f2 }

// read returns the TAT and the uncapped TAT, from now, as the script's
// decide reads them.
func (s *tokenBucketState) read(now int64) (w, f, wu, fu int64) {
	capw, capf := s.iv.times(s.burst)
	w, f = s.tat-now, s.frac
	wu, fu = s.tatU-now, s.fracU
	if w < 0 {
		w, f = 0, 0
	}
	if wu < 0 {
		wu, fu = 0, 0
	}
	switch {
	case !before(capw, capf, w, f):
		s.debt = false // repaid
	case !s.debt:
		w, f = capw, capf // the clock went back, or another burst
	case w > maxMicros:
		w, f = maxMicros, 0 // in debt, and the clock went back
	}
	if before(wu, fu, w, f) {
		wu, fu = w, f
	} else if wu > maxMicros {
		wu, fu = maxMicros, 0
	}
	return w, f, wu, fu
}

// store keeps the TAT and the uncapped TAT, from now, as the script
// writes them: an uncapped TAT apart from the TAT, or any in debt,
// rounded up to a whole µs.
func (s *tokenBucketState) store(now, w, f, wu, fu int64) {
	capw, capf := s.iv.times(s.burst)
	s.debt = before(capw, capf, w, f)
	if s.debt || wu != w || fu != f {
		wu, fu = ceilMicros(wu, fu), 0
	}
	s.tat, s.frac = now+w, f
	s.tatU, s.fracU = now+wu, fu
}

// span returns n intervals, n ≥ 0, as times does, or maxMicros + 1 µs
// when they are longer: any write caps a TAT at maxMicros from now.
func (iv interval) span(n int64) (w, f int64) {
	if iv.q > 0 && n > maxMicros/iv.q {
		return maxMicros + 1, 0
	}
	if w, f = iv.times(n); w > maxMicros {
		return maxMicros + 1, 0
	}
	return w, f
}

func (s *tokenBucketState) Decide(now int64, n int, consume bool) Result {
	capw, capf := s.iv.times(s.burst)
	w, f, wu, fu := s.read(now)
	tw, tf := s.iv.times(int64(n))
	nw, nf := w+tw, f+tf
	if nf >= s.iv.d {
		nw, nf = nw+1, nf-s.iv.d
	}
	allowed := !before(capw, capf, nw, nf)
	r := Result{Allowed: allowed}
	if !s.debt {
		r.Remaining = int(s.burst - s.iv.inUse(w, f))
	}
	if !allowed {
		r.RetryAfter = micros(ceilMicros(nw-capw, nf-capf))
	} else if consume {
		w, f = nw, nf
		wu, fu = wu+tw, fu+tf
		if fu >= s.iv.d {
			wu, fu = wu+1, fu-s.iv.d
		}
		if wu > maxMicros {
			wu, fu = maxMicros, 0
		}
		r.Remaining -= n
	}
	s.store(now, w, f, wu, fu)
	r.ResetAfter = micros(ceilMicros(w, f))
	return r
}

// adjust implements adjuster, as the script's write does with a debit or
// a refund: the TAT and the uncapped TAT move by n intervals, at most
// MaxWindow from now and never before it.
func (s *tokenBucketState) adjust(now, n int64) bool {
	w, f, wu, fu := s.read(now)
	d := s.iv.d
	if n > 0 {
		tw, tf := s.iv.span(n)
		w, f = w+tw, f+tf
		if f >= d {
			w, f = w+1, f-d
		}
		wu, fu = wu+tw, fu+tf
		if fu >= d {
			wu, fu = wu+1, fu-d
		}
		if w > maxMicros {
			w, f = maxMicros, 0
		}
		if wu > maxMicros {
			wu, fu = maxMicros, 0
		}
	} else {
		tw, tf := s.iv.span(-n)
		w, f = w-tw, f-tf
		if f < 0 {
			w, f = w-1, f+d
		}
		if w < 0 {
			w, f = 0, 0
		}
		wu, fu = wu-tw, fu-tf
		if fu < 0 {
			wu, fu = wu-1, fu+d
		}
		if wu < 0 {
			wu, fu = 0, 0
		}
	}
	s.store(now, w, f, wu, fu)
	return true
}

func (s *tokenBucketState) ExpiresAt() int64 { return ceilMicros(s.tatU, s.fracU) }

// carry implements carrier, as the script reads a key written with other
// parameters. With the same interval and burst the state carries over as
// it is; with another burst, the TAT is the uncapped one, which Decide
// caps at the burst; with another interval, the tokens in use by the
// uncapped TAT, a partly refilled one counted whole, are in use at this
// state's interval, at most the burst of them in the TAT and at most
// maxUnits, or MaxWindow of them, in the uncapped TAT. A debt carries
// over only with the same interval and burst.
func (s *tokenBucketState) carry(from LocalState, now int64) {
	o, ok := from.(*tokenBucketState)
	if !ok {
		return
	}
	if o.iv == s.iv {
		s.tat, s.frac, s.tatU, s.fracU = o.tat, o.frac, o.tatU, o.fracU
		if o.burst != s.burst {
			s.tat, s.frac = o.tatU, o.fracU
		} else {
			s.debt = o.debt
		}
		return
	}
	w := o.tatU - now
	if w < 0 || w == 0 && o.fracU == 0 {
		return
	}
	// At most maxUnits tokens, or MaxWindow of them: at the fastest rates
	// MaxWindow holds more than int64 and the script's doubles count.
	most := int64(maxUnits)
	if float64(maxMicros)/(float64(s.iv.q)+float64(s.iv.r)/float64(s.iv.d)) <= float64(maxUnits) {
		most = min(s.iv.inUse(maxMicros, 0), maxUnits)
	}
	used := most
	if est := (float64(w) + float64(o.fracU)/float64(o.iv.d)) / (float64(o.iv.q) + float64(o.iv.r)/float64(o.iv.d)); est <= float64(most+1) {
		used = min(o.iv.inUse(w, o.fracU), most)
	}
	uw, uf := s.iv.times(used)
	s.tatU, s.fracU = now+uw, uf
	cw, cf := s.iv.times(min(used, s.burst))
	s.tat, s.frac = now+cw, cf
}
