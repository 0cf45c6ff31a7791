package redislimit_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// changeStep is one call in a test of a key whose parameters change: move
// the clock by Advance, then call AllowN with cost N (or Peek) through the
// limiter of the test's algorithm Alg, and expect Want.
type changeStep struct {
	Advance time.Duration
	Alg     int
	N       int
	Peek    bool
	Want    redislimit.Result
}

// sharedState decides in process memory on one key for token buckets of
// several parameters, carrying the key's usage over when they change, as
// the in-process store does.
type sharedState struct {
	alg redislimit.Algorithm
	st  redislimit.LocalState
}

func (s *sharedState) decide(t *testing.T, alg redislimit.Algorithm, now time.Time, n int, consume bool) redislimit.Result {
	t.Helper()
	if s.st == nil || alg != s.alg {
		fresh := alg.(redislimit.LocalAlgorithm).NewLocalState(1)
		if s.st != nil && !redislimit.Carry(fresh, s.st, now.UnixMicro()) {
			t.Fatalf("%T does not carry usage", fresh)
		}
		s.alg, s.st = alg, fresh
	}
	r := s.st.Decide(now.UnixMicro(), n, consume)
	r.Limit = alg.Limit()
	return r
}

// A key keeps its usage when token buckets of other parameters decide on
// it: the tokens in use, a partly refilled one counted whole, capped at the
// new burst, refilling at the new rate. On Redis two limiters with one
// prefix share the key; in process, the state carries over.
func TestTokenBucketKeepsUsageAcrossParameters(t *testing.T) {
	s, ms, us, minute := time.Second, time.Millisecond, time.Microsecond, time.Minute
	tb := redislimit.TokenBucket
	tests := []struct {
		name  string
		algs  []redislimit.Algorithm
		steps []changeStep
	}{
		{"LargerBurst", []redislimit.Algorithm{tb(10, minute, 10), tb(10, minute, 100)}, []changeStep{
			{0, 0, 8, false, allowed(10, 2, 48*s)},
			{0, 1, 0, true, allowed(100, 92, 48*s)},
			{0, 1, 92, false, allowed(100, 0, 10*minute)},
			{0, 1, 1, false, denied(100, 0, 6*s, 10*minute)},
			// Back to a burst of 10: full usage, capped.
			{0, 0, 0, true, denied(10, 0, 6*s, minute)},
		}},
		{"SmallerBurstSlowerRate", []redislimit.Algorithm{tb(100, minute, 100), tb(10, minute, 10)}, []changeStep{
			{0, 0, 58, false, allowed(100, 42, 34800*ms)},
			{0, 1, 1, false, denied(10, 0, 6*s, minute)},
			{6 * s, 1, 1, false, allowed(10, 0, minute)},
			// Back: the 58 tokens in use, 48 of them past the smaller
			// burst, at 0.6s each.
			{0, 0, 0, true, allowed(100, 42, 34800*ms)},
		}},
		{"DowngradeAndBackGivesNothingAway", []redislimit.Algorithm{tb(100, minute, 100), tb(10, minute, 10), tb(50, minute, 50)}, []changeStep{
			{0, 0, 100, false, allowed(100, 0, minute)},
			{0, 1, 1, false, denied(10, 0, 6*s, minute)},
			{0, 0, 1, false, denied(100, 0, 600*ms, minute)},
			{0, 1, 0, true, denied(10, 0, 6*s, minute)},
			// The smaller plan's tokens refill at its rate, one every
			// 6s, and the ones past its burst wait behind them.
			{6 * s, 1, 1, false, allowed(10, 0, minute)},
			{0, 0, 0, true, denied(100, 0, 600*ms, minute)},
			// Read by a burst of 50 at 1.2s a token, then after 6s by
			// the burst of 10: 95 in use, capped at 10.
			{0, 2, 0, true, denied(50, 0, 1200*ms, minute)},
			{6 * s, 1, 1, false, denied(10, 0, 6*s, minute)},
			{0, 0, 1, false, allowed(100, 4, 57600*ms)},
		}},
		{"PartlyRefilledTokenCounts", []redislimit.Algorithm{tb(100, minute, 100), tb(10, minute, 100)}, []changeStep{
			{0, 0, 58, false, allowed(100, 42, 34800*ms)},
			// 57.5 tokens in use: 58 at 6s each.
			{300 * ms, 1, 0, true, allowed(100, 42, 348*s)},
		}},
		{"PartOfAµsCounts", []redislimit.Algorithm{tb(3, s, 3), tb(1, s, 10)}, []changeStep{
			{0, 0, 2, false, allowed(3, 1, 666667*us)},
			// 333333⅓µs away: a whole token and a third of a µs of another.
			{333333 * us, 1, 0, true, allowed(10, 8, 2*s)},
			{0, 0, 0, true, allowed(3, 1, 666667*us)},
		}},
		{"SameIntervalKeepsTheFraction", []redislimit.Algorithm{tb(3, s, 3), tb(6, 2*s, 5)}, []changeStep{
			{0, 0, 1, false, allowed(3, 2, 333334*us)},
			// The TAT is 333332⅓µs away, not rounded to a whole token.
			{us, 1, 0, true, allowed(5, 4, 333333*us)},
			{0, 1, 5, false, denied(5, 4, 333333*us, 333333*us)},
			{333332 * us, 1, 5, false, denied(5, 4, us, us)},
			{us, 1, 5, false, allowed(5, 0, 1666667*us)},
		}},
		{"ClockBack", []redislimit.Algorithm{tb(100, minute, 100), tb(10, minute, 20)}, []changeStep{
			{0, 0, 100, false, allowed(100, 0, minute)},
			// 150 tokens in use as the clock reads now, at most 20.
			{-30 * s, 1, 0, true, denied(20, 0, 6*s, 2*minute)},
			{0, 1, 0, true, denied(20, 0, 6*s, 2*minute)},
		}},
	}
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := context.Background()
				clk := clock.NewFake(epoch)
				var lims []*redislimit.Limiter
				if b.inspectable() {
					for _, alg := range tt.algs {
						lim, _ := b.newLimiter(t, alg, clk)
						lims = append(lims, lim)
					}
				}
				var shared sharedState
				var elapsed time.Duration
				for i, st := range tt.steps {
					clk.Advance(st.Advance)
					elapsed += st.Advance
					var got redislimit.Result
					var err error
					switch {
					case lims == nil:
						got = shared.decide(t, tt.algs[st.Alg], clk.Now(), max(st.N, 1), !st.Peek)
					case st.Peek:
						got, err = lims[st.Alg].Peek(ctx, "user")
					default:
						got, err = lims[st.Alg].AllowN(ctx, "user", st.N)
					}
					if err != nil {
						t.Fatalf("step %d at +%v: %v", i, elapsed, err)
					}
					if diff := cmp.Diff(st.Want, got); diff != "" {
						t.Errorf("step %d: bucket %d, cost %d (peek %v) at +%v = %+v, want %+v (-want +got)\n%s", i, st.Alg, st.N, st.Peek, elapsed, got, st.Want, diff)
					}
				}
			})
		}
	})
}

// The script and the in-process state agree over random calls on two keys
// whose parameters switch among token buckets, fractional intervals and a
// shared interval among them. As in TestLocalMatchesScripts, times stay on
// a one-second grid and only move forward.
func TestTokenBucketChangesMatchLocal(t *testing.T) {
	tb := redislimit.TokenBucket
	s := time.Second
	algs := []redislimit.Algorithm{tb(3, 7*s, 4), tb(1, 2*s, 7), tb(5, 3*s, 3), tb(3, 7*s, 6), tb(70000, s, 9)}
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		for seed := range uint64(4) {
			t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 7))
				clk := clock.NewFake(epoch)
				c := b.Client(t)
				var lims []*redislimit.Limiter
				for _, alg := range algs {
					lims = append(lims, newRedisLimiter(t, c, alg, clk))
				}
				local := map[string]*sharedState{"k0": {}, "k1": {}}
				ctx := context.Background()
				ai := 0
				for i := 0; i < 200; i++ {
					if rng.IntN(2) == 0 {
						clk.Advance(time.Duration(rng.IntN(3)) * s)
					}
					if rng.IntN(3) == 0 {
						ai = rng.IntN(len(algs))
					}
					key := "k" + strconv.Itoa(rng.IntN(2))
					n, peek := 1+rng.IntN(algs[ai].Limit()), rng.IntN(5) == 0
					var want redislimit.Result
					var err error
					if peek {
						want, err = lims[ai].Peek(ctx, key)
						n = 1
					} else {
						want, err = lims[ai].AllowN(ctx, key, n)
					}
					if err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
					got := local[key].decide(t, algs[ai], clk.Now(), n, !peek)
					if diff := cmp.Diff(want, got); diff != "" {
						t.Fatalf("step %d: bucket %d, key %s, cost %d (peek %v): local differs from Redis (-redis +local):\n%s", i, ai, key, n, peek, diff)
					}
				}
			})
		}
	})
}

// A key written before refill intervals were fractions holds the TAT as a
// bare integer of µs: it is read under the current interval, left as it is
// by a peek, and rewritten in the current format by a call that consumes.
func TestTokenBucketReadsTheOldState(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		clk := clock.NewFake(epoch)
		lim, c := newLimiter(t, b, redislimit.TokenBucket(10, time.Minute, 10), clk)
		rk := redislimit.RedisKey(lim, "u")
		old := strconv.FormatInt(epoch.Add(12*time.Second).UnixMicro(), 10)
		if err := c.Set(ctx, rk, old, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		r, err := lim.Peek(ctx, "u")
		if want := allowed(10, 8, 12*time.Second); err != nil || !cmp.Equal(r, want) {
			t.Fatalf("Peek over the old state = %+v, %v; want %+v", r, err, want)
		}
		if v, _ := c.Get(ctx, rk).Result(); v != old {
			t.Errorf("a peek rewrote the old state %q as %q", old, v)
		}
		r, err = lim.Allow(ctx, "u")
		if want := allowed(10, 7, 18*time.Second); err != nil || !cmp.Equal(r, want) {
			t.Fatalf("Allow over the old state = %+v, %v; want %+v", r, err, want)
		}
		want := strconv.FormatInt(epoch.Add(18*time.Second).UnixMicro(), 10) + " 0 6000000 1"
		if v, _ := c.Get(ctx, rk).Result(); v != want {
			t.Errorf("state after Allow = %q, want %q", v, want)
		}
	})
}

// A state written with a large, awkward configuration, whose four numbers
// all have many digits, takes at most 200 bytes in Redis, at the key of an
// IPv6 address under the default prefix.
func TestTokenBucketStateSize(t *testing.T) {
	ctx := context.Background()
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	// A prime rate over nearly MaxWindow: p and d have 15 and 8 digits,
	// and the fraction of a TAT one token away about as many as d.
	alg := redislimit.TokenBucket(67108859, redislimit.MaxWindow-time.Microsecond, 67108859)
	lim := newRedisLimiter(t, c, alg, clock.NewFake(epoch), redislimit.WithPrefix(redislimit.DefaultPrefix))
	key := "2001:0db8:85a3:0000:0000:8a2e:0370:7334" // the longest IPv6 address
	if _, err := lim.AllowN(ctx, key, 3); err != nil {
		t.Fatal(err)
	}
	rk := redislimit.RedisKey(lim, key)
	v, err := c.Get(ctx, rk).Result()
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(v); len(f) != 4 || len(f[1]) < 7 {
		t.Fatalf("state %q: want four numbers, the fraction of 7 digits or more", v)
	}
	size, err := c.MemoryUsage(ctx, rk).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("MEMORY USAGE of %q (%d bytes of key) holding %q: %d bytes", rk, len(rk), v, size)
	if size > 200 {
		t.Errorf("MEMORY USAGE = %d bytes, want at most 200", size)
	}

	// A burst of one on the same key caps the tokens in use, and the
	// state remembers the uncapped ones: six numbers.
	small := redislimit.TokenBucket(67108859, redislimit.MaxWindow-time.Microsecond, 1)
	if _, err := lim.AllowN(ctx, key, 67108859-3); err != nil {
		t.Fatal(err)
	}
	if _, err := using(t, lim, small).Peek(ctx, key); err != nil {
		t.Fatal(err)
	}
	if v, err = c.Get(ctx, rk).Result(); err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(v); len(f) != 6 || len(f[4]) < 14 {
		t.Fatalf("state %q: want six numbers, the uncapped TAT 14 digits or more past the TAT", v)
	}
	if size, err = c.MemoryUsage(ctx, rk).Result(); err != nil {
		t.Fatal(err)
	}
	t.Logf("MEMORY USAGE holding %q: %d bytes", v, size)
	if size > 200 {
		t.Errorf("MEMORY USAGE = %d bytes, want at most 200", size)
	}

	// A debt on the large burst: six numbers, the burst negative.
	if _, err := lim.Debit(ctx, key, redislimit.MaxDebit); err != nil {
		t.Fatal(err)
	}
	if v, err = c.Get(ctx, rk).Result(); err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(v); len(f) != 6 || f[5] != "-67108859" {
		t.Fatalf("state %q: want six numbers, the last the burst negated", v)
	}
	if size, err = c.MemoryUsage(ctx, rk).Result(); err != nil {
		t.Fatal(err)
	}
	t.Logf("MEMORY USAGE holding %q: %d bytes", v, size)
	if size > 200 {
		t.Errorf("MEMORY USAGE = %d bytes, want at most 200", size)
	}
}

// WithLocalInstances divides the burst and the rate exactly, and an
// interval that would take an empty bucket past MaxWindow to fill is
// shortened to fill it in MaxWindow.
func TestTokenBucketLocalInstances(t *testing.T) {
	us := time.Microsecond
	tests := []struct {
		name      string
		alg       redislimit.Algorithm
		instances int
		steps     []step
	}{
		{"Fractional", redislimit.TokenBucket(7, time.Second, 7), 2, []step{
			// 3 tokens of 285714 + 2/7 µs.
			{N: 3, Want: allowed(3, 0, 857143*us)},
			{N: 1, Want: denied(3, 0, 285715*us, 857143*us)},
			{Advance: 285715 * us, N: 1, Want: allowed(3, 0, 857143*us)},
		}},
		{"CappedAtMaxWindow", redislimit.TokenBucket(1, redislimit.MaxWindow, 1), 2, []step{
			{N: 1, Want: allowed(1, 0, redislimit.MaxWindow)},
			{N: 1, Want: denied(1, 0, redislimit.MaxWindow, redislimit.MaxWindow)},
		}},
		{"CappedPastInt64", redislimit.TokenBucket(7, redislimit.MaxWindow, 3), 1 << 50, []step{
			// per×instances overflows int64 µs.
			{N: 1, Want: allowed(1, 0, redislimit.MaxWindow)},
			{Advance: redislimit.MaxWindow - us, N: 1, Want: denied(1, 0, us, us)},
		}},
		{"ManyInstances", redislimit.TokenBucket(1<<50, time.Millisecond, 1<<50), 1 << 50, []step{
			{N: 1, Want: allowed(1, 0, time.Millisecond)},
			{Advance: time.Millisecond - us, N: 1, Want: denied(1, 0, us, us)},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewFake(epoch)
			lim, err := redislimit.NewLocal(tt.alg, redislimit.WithClock(clk.Now), redislimit.WithLocalInstances(tt.instances))
			if err != nil {
				t.Fatal(err)
			}
			runSteps(t, lim, clk, "k", tt.steps)
		})
	}
}
