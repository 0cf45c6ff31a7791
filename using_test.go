package redislimit_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// using returns lim.Using(alg), failing the test on an error.
func using(t testing.TB, lim *redislimit.Limiter, alg redislimit.Algorithm) *redislimit.Limiter {
	t.Helper()
	d, err := lim.Using(alg)
	if err != nil {
		t.Fatalf("Using(%v): %v", alg, err)
	}
	return d
}

// Using refuses what New refuses, with the same errors, and writes
// nothing.
func TestUsingErrors(t *testing.T) {
	m := redistest.Mini(t)
	c := redistest.NewClient(t, m.Addr())
	lim := newRedisLimiter(t, c, redislimit.TokenBucket(10, time.Minute, 10), nil)
	local, err := redislimit.NewLocal(redislimit.FixedWindow(10, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var zero redislimit.Limiter
	tests := []struct {
		name string
		lim  *redislimit.Limiter
		alg  redislimit.Algorithm
		want error
	}{
		{"nil", lim, nil, redislimit.ErrNilAlgorithm},
		{"nil pointer", lim, (*dailyQuota)(nil), redislimit.ErrNilAlgorithm},
		{"zero rate", lim, redislimit.TokenBucket(0, time.Minute, 10), redislimit.ErrInvalidConfig},
		{"short window", lim, redislimit.FixedWindow(10, time.Microsecond), redislimit.ErrInvalidConfig},
		{"bad part", lim, redislimit.All(redislimit.FixedWindow(0, time.Minute)), redislimit.ErrInvalidConfig},
		{"not local", local, dailyQuota{limit: 5}, redislimit.ErrInvalidConfig},
		{"zero Limiter", &zero, redislimit.FixedWindow(10, time.Minute), redislimit.ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := tt.lim.Using(tt.alg)
			if !errors.Is(err, tt.want) || d != nil {
				t.Errorf("Using = (%v, %v), want (nil, %v)", d, err, tt.want)
			}
			if tt.lim != &zero {
				_, newErr := redislimit.New(c, tt.alg)
				if tt.lim == local {
					_, newErr = redislimit.NewLocal(tt.alg)
				}
				if err == nil || newErr == nil || err.Error() != newErr.Error() {
					t.Errorf("Using's error %q, New's %q: want the same", err, newErr)
				}
			}
		})
	}
	if n := keysUnder(t, c); n != 0 {
		t.Errorf("%d keys written, want none", n)
	}
}

// A key's usage carries over when its limit changes, on every algorithm
// and backend: after 5 of 5 units, a limit of 10 leaves 5; after 10, a
// limit of 3 denies; and going back to 10 gives nothing away.
func TestUsingKeepsUsage(t *testing.T) {
	ctx := context.Background()
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		for _, row := range algtest.Rows {
			t.Run(row.Name, func(t *testing.T) {
				b.skipUnlessRuns(t, row)
				clk := clock.NewFake(epoch)
				free, _ := b.newLimiter(t, row.New(5, time.Hour), clk)
				pro := using(t, free, row.New(10, time.Hour))
				if r, err := free.AllowN(ctx, "tenant", 5); err != nil || !r.Allowed {
					t.Fatalf("free AllowN(5) = %+v, %v; want allowed", r, err)
				}
				if r, err := pro.Peek(ctx, "tenant"); err != nil || r.Remaining != 5 || r.Limit != 10 {
					t.Fatalf("after an upgrade, Peek = %+v, %v; want Remaining 5 of 10", r, err)
				}
				admitted := 0
				for range 8 {
					r, err := pro.Allow(ctx, "tenant")
					if err != nil {
						t.Fatal(err)
					}
					if r.Allowed {
						admitted++
					}
				}
				if admitted != 5 {
					t.Errorf("after an upgrade, %d of 8 calls admitted, want 5", admitted)
				}
				down := using(t, free, row.New(3, time.Hour))
				if r, err := down.Allow(ctx, "tenant"); err != nil || r.Allowed || r.Remaining != 0 {
					t.Errorf("after a downgrade, Allow = %+v, %v; want denied, Remaining 0", r, err)
				}
				if r, err := pro.Allow(ctx, "tenant"); err != nil || r.Allowed {
					t.Errorf("back on the larger limit, Allow = %+v, %v; want denied", r, err)
				}
			})
		}
	})
}

// A derived Limiter shares its parent's prefix and key layout (a reset
// through one is seen by the other), and reports its own limit; Using on
// the same algorithm value again returns the same Limiter.
func TestUsingSharesKeys(t *testing.T) {
	ctx := context.Background()
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		clk := clock.NewFake(epoch)
		free, _ := b.newLimiter(t, redislimit.FixedWindow(5, time.Minute), clk)
		pro := using(t, free, redislimit.FixedWindow(50, time.Hour))
		if again := using(t, free, redislimit.FixedWindow(50, time.Hour)); again != pro {
			t.Errorf("Using the same algorithm twice gave two Limiters")
		}
		if via := using(t, pro, redislimit.FixedWindow(5, time.Minute)); via != using(t, pro, redislimit.FixedWindow(5, time.Minute)) || via.Quotas()[0] != free.Quotas()[0] {
			t.Errorf("Using the parent's algorithm on a derived Limiter twice: two Limiters, or Quotas %v, want %v", via.Quotas(), free.Quotas())
		}
		if q := pro.Quotas(); len(q) != 1 || q[0] != (redislimit.Quota{Limit: 50, Window: time.Hour}) {
			t.Errorf("derived Quotas = %v, want 50 per hour", q)
		}
		if _, err := pro.AllowN(ctx, "k", 5); err != nil {
			t.Fatal(err)
		}
		if r, err := free.Allow(ctx, "k"); err != nil || r.Allowed {
			t.Errorf("parent after the derived Limiter used 5 = %+v, %v; want denied", r, err)
		}
		if err := free.Reset(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		if r, err := pro.Peek(ctx, "k"); err != nil || r.Remaining != 50 {
			t.Errorf("derived Limiter after the parent's Reset = %+v, %v; want Remaining 50", r, err)
		}
		other := using(t, free, redislimit.TokenBucket(5, time.Minute, 5))
		if _, err := free.AllowN(ctx, "k", 5); err != nil {
			t.Fatal(err)
		}
		if r, err := other.Peek(ctx, "k"); err != nil || r.Remaining != 5 {
			t.Errorf("another kind of algorithm = %+v, %v; want a key of its own, Remaining 5", r, err)
		}
	})
}

// A denial is reused only under the limit that gave it: the larger plan's
// call on a key the smaller one denied goes to Redis and is admitted; the
// smaller plan's next call is answered in process.
func TestUsingDenyCacheAcrossPlans(t *testing.T) {
	ctx := context.Background()
	c, cnt := countedServer(t)
	free := newRedisLimiter(t, c, redislimit.FixedWindow(2, time.Hour), nil, redislimit.WithDenyCache(100))
	pro := using(t, free, redislimit.FixedWindow(4, time.Hour))
	evals := func() int {
		_, cmds := cnt.snapshot()
		return cmds["EVALSHA"] + cmds["EVAL"]
	}
	steps := []struct {
		lim     *redislimit.Limiter
		allowed bool
		toRedis bool
	}{
		{free, true, true},
		{free, true, true},
		{free, false, true},  // denied, and remembered
		{free, false, false}, // from the deny cache
		{pro, true, true},    // another limit: Redis decides
		{free, false, true},  // the admission dropped the denial
		{free, false, false},
		{pro, true, true},
		{pro, false, true},
		{pro, false, false},
		{free, false, true}, // the larger plan's denial says nothing of the smaller's
	}
	for i, s := range steps {
		before := evals()
		r, err := s.lim.Allow(ctx, "tenant")
		if err != nil {
			t.Fatal(err)
		}
		if r.Allowed != s.allowed {
			t.Errorf("step %d: Allowed = %v, want %v", i, r.Allowed, s.allowed)
		}
		if sent := evals() > before; sent != s.toRedis {
			t.Errorf("step %d: sent to Redis = %v, want %v", i, sent, s.toRedis)
		}
	}
}

// Clients in four processes, eight goroutines each, alternate two plans on
// one key: together they never admit more than the larger plan allows.
func TestUsingConcurrentPlans(t *testing.T) {
	ctx := context.Background()
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		for _, row := range algtest.Rows {
			t.Run(row.Name, func(t *testing.T) {
				b.skipUnlessRuns(t, row)
				small, large := row.New(10, time.Hour), row.New(20, time.Hour)
				processes := 4
				if b.client == nil {
					processes = 1 // in-process limiters share nothing across instances
				}
				plans := make([][2]*redislimit.Limiter, processes)
				for p := range plans {
					lim, _ := b.newLimiter(t, small, nil)
					plans[p] = [2]*redislimit.Limiter{lim, using(t, lim, large)}
				}
				var admitted atomic.Int64
				var errs firstErrors
				var wg sync.WaitGroup
				for p := range processes {
					for g := range 8 {
						wg.Go(func() {
							for i := range 12 {
								lim := plans[p][(g+i)%2]
								r, err := lim.Allow(ctx, "tenant")
								if err != nil {
									errs.add("Allow: %v", err)
									return
								}
								if r.Allowed {
									admitted.Add(1)
								}
							}
						})
					}
				}
				wg.Wait()
				errs.report(t)
				if n := admitted.Load(); n > 20 || n < 10 {
					t.Errorf("%d admitted, want 10 to 20 (the larger plan's limit)", n)
				}
			})
		}
	})
}

// Using an algorithm value seen before allocates nothing and sends
// nothing; one with new parameters of a known body, a few allocations.
func TestUsingAllocs(t *testing.T) {
	c, cnt := countedServer(t)
	lim := newRedisLimiter(t, c, redislimit.TokenBucket(100, time.Minute, 100), nil)
	plan := redislimit.TokenBucket(1000, time.Minute, 1000)
	if got := testing.AllocsPerRun(100, func() { _, _ = lim.Using(plan) }); got > 0 {
		t.Errorf("Using a known algorithm: %v allocations, want 0", got)
	}
	rate := 1000
	got := testing.AllocsPerRun(100, func() {
		rate++
		_, _ = lim.Using(redislimit.TokenBucket(rate, time.Minute, 1000))
	})
	if got > 4 {
		t.Errorf("Using new parameters: %v allocations, want at most 4", got)
	}
	if rt, _ := cnt.snapshot(); rt != 0 {
		t.Errorf("Using sent %d round trips, want none", rt)
	}
}

func BenchmarkUsing(b *testing.B) {
	m := redistest.Mini(b)
	lim, err := redislimit.New(redistest.NewClient(b, m.Addr()), redislimit.TokenBucket(100, time.Minute, 100))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("known", func(b *testing.B) {
		plans := []redislimit.Algorithm{redislimit.TokenBucket(100, time.Minute, 100), redislimit.TokenBucket(1000, time.Minute, 1000)}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := lim.Using(plans[i%2]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("constructed", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := lim.Using(redislimit.TokenBucket(100+i%2*900, time.Minute, 1000)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("new-parameters", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := lim.Using(redislimit.TokenBucket(1000+i%100000, time.Minute, 100000)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func ExampleLimiter_Using() {
	ctx := context.Background()
	rdb, done := newRedis()
	defer done()
	free, err := redislimit.New(rdb, redislimit.FixedWindow(10, time.Minute))
	if err != nil {
		panic(err)
	}
	pro, err := free.Using(redislimit.FixedWindow(100, time.Minute))
	if err != nil {
		panic(err)
	}
	// A free tenant uses 8 of its 10 calls, then upgrades.
	if _, err := free.AllowN(ctx, "tenant-42", 8); err != nil {
		panic(err)
	}
	r, err := pro.Peek(ctx, "tenant-42")
	if err != nil {
		panic(err)
	}
	fmt.Println(r.Remaining, "of", r.Limit, "left")
	// Output: 92 of 100 left
}

// countAlg is a LocalAlgorithm defined elsewhere: at most limit per hour.
// tags, a slice, keeps its values from being compared.
type countAlg struct {
	limit int
	tags  []string
}

func (countAlg) Name() string           { return "cnt" }
func (a countAlg) Limit() int           { return a.limit }
func (countAlg) Body() string           { return dailyQuotaBody }
func (a countAlg) Args() ([]any, error) { return []any{a.limit}, nil }
func (a countAlg) NewLocalState(instances int) redislimit.LocalState {
	return &countState{limit: max(1, a.limit/instances)}
}

type countState struct{ used, limit int }

func (s *countState) Decide(now int64, n int, consume bool) redislimit.Result {
	ok := s.used+n <= s.limit
	if ok && consume {
		s.used += n
	}
	r := redislimit.Result{Allowed: ok, Remaining: s.limit - s.used}
	if !ok {
		r.RetryAfter = time.Hour
	}
	return r
}
func (s *countState) ExpiresAt() int64 { return math.MaxInt64 }

// nanAlg is of a comparable type, and holds a float that may be NaN.
type nanAlg struct {
	limit int
	skew  float64
}

func (nanAlg) Name() string           { return "nan" }
func (a nanAlg) Limit() int           { return a.limit }
func (nanAlg) Body() string           { return dailyQuotaBody }
func (a nanAlg) Args() ([]any, error) { return []any{a.limit}, nil }
func (a nanAlg) NewLocalState(instances int) redislimit.LocalState {
	return &countState{limit: a.limit}
}

// ptrAlg is an algorithm of a pointer type whose parameters may change.
type ptrAlg struct{ limit int }

func (*ptrAlg) Name() string           { return "daily" }
func (a *ptrAlg) Limit() int           { return a.limit }
func (*ptrAlg) Body() string           { return dailyQuotaBody }
func (a *ptrAlg) Args() ([]any, error) { return []any{a.limit}, nil }

func admitted(t *testing.T, get func() *redislimit.Limiter, calls int) int {
	t.Helper()
	n := 0
	for range calls {
		r, err := get().Allow(context.Background(), "k")
		if err != nil {
			t.Fatal(err)
		}
		if r.Allowed {
			n++
		}
	}
	return n
}

// An algorithm that cannot be compared, derived per call, is found by its
// arguments: in process, a key's state stays with equal parameters.
func TestUsingLocalUncomparablePerCall(t *testing.T) {
	alg := countAlg{limit: 2, tags: []string{"x"}}
	parent, err := redislimit.NewLocal(alg)
	if err != nil {
		t.Fatal(err)
	}
	if n := admitted(t, func() *redislimit.Limiter { return parent }, 5); n != 2 {
		t.Fatalf("parent: %d admitted, want 2", n)
	}
	parent2, _ := redislimit.NewLocal(alg)
	got := admitted(t, func() *redislimit.Limiter {
		d, err := parent2.Using(countAlg{limit: 2, tags: []string{"x"}})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}, 5)
	if got != 2 {
		t.Errorf("Using the same parameters per call: %d of 5 admitted, want 2", got)
	}
}

// An algorithm holding a NaN, never equal to itself, still keeps its
// keys' state in process.
func TestLocalAlgorithmHoldingNaN(t *testing.T) {
	lim, err := redislimit.NewLocal(nanAlg{limit: 2, skew: math.NaN()})
	if err != nil {
		t.Fatal(err)
	}
	if n := admitted(t, func() *redislimit.Limiter { return lim }, 5); n != 2 {
		t.Errorf("NewLocal(alg with NaN): %d of 5 admitted, want 2", n)
	}
}

// The deny cache answers for an All derived per call, as for one Limiter.
func TestUsingDenyCacheAllPerCall(t *testing.T) {
	c, _ := countedServer(t)
	var hits atomic.Int64
	obs := redislimit.WithObserver(func(ctx context.Context, o redislimit.Observation) {
		if o.DenyCacheHit {
			hits.Add(1)
		}
	})
	plan := func() redislimit.Algorithm {
		return redislimit.All(redislimit.FixedWindow(2, time.Hour), redislimit.FixedWindow(100, 24*time.Hour))
	}
	parent := newRedisLimiter(t, c, redislimit.FixedWindow(1000, time.Hour), nil, redislimit.WithDenyCache(100), obs)
	for range 10 {
		d, err := parent.Using(plan())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Allow(context.Background(), "k"); err != nil {
			t.Fatal(err)
		}
	}
	if hits.Load() == 0 {
		t.Errorf("deny cache hits for All derived per call = 0, want 7 (as with one Limiter)")
	}
}

// An algorithm of a pointer type is found by its arguments, not its
// address: after its parameters change, Using decides with the new ones.
func TestUsingPointerAlgorithm(t *testing.T) {
	c, _ := countedServer(t)
	parent := newRedisLimiter(t, c, redislimit.FixedWindow(10, time.Hour), nil)
	p := &ptrAlg{limit: 5}
	d1, _ := parent.Using(p)
	p.limit = 50
	d2, _ := parent.Using(p)
	n, _ := redislimit.New(c, p)
	if d1 == d2 || d2.Quotas()[0].Limit != 50 || n.Quotas()[0].Limit != 50 {
		t.Errorf("after the limit went from 5 to 50: same Limiter %v, Quotas %v, New's %v; want a new Limiter of 50", d1 == d2, d2.Quotas(), n.Quotas())
	}
	if _, err := d2.AllowN(context.Background(), "k", 20); err != nil {
		t.Errorf("AllowN(20) after the limit was raised to 50: %v", err)
	}
}

// Waiters under other parameters do not queue behind each other: a
// TokenBucket waiter with tokens to spare, and a larger plan's waiter,
// return at once while a FixedWindow waiter on the same user key sleeps.
func TestUsingWaitTurns(t *testing.T) {
	c, _ := countedServer(t)
	fw := newRedisLimiter(t, c, redislimit.FixedWindow(1, time.Hour), nil)
	tb, err := fw.Using(redislimit.TokenBucket(100, time.Second, 100))
	if err != nil {
		t.Fatal(err)
	}
	bg := context.Background()
	if _, err := fw.Allow(bg, "k"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	go fw.Wait(ctx, "k") // sleeps ~1h holding k's turn
	time.Sleep(200 * time.Millisecond)
	ctx2, cancel2 := context.WithTimeout(bg, time.Second)
	defer cancel2()
	if err := tb.Wait(ctx2, "k"); err != nil {
		t.Errorf("TokenBucket Wait on its own key with 100 free: %v (New's Limiter returns at once)", err)
	}
	// same kind, larger plan: could be admitted now, also blocked.
	pro, _ := fw.Using(redislimit.FixedWindow(100, time.Hour))
	ctx3, cancel3 := context.WithTimeout(bg, time.Second)
	defer cancel3()
	if err := pro.Wait(ctx3, "k"); err != nil {
		t.Errorf("pro plan Wait with 99 free: %v", err)
	}
}
