package redislimit_test

import (
	"context"
	"errors"
	"fmt"
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
		if via := using(t, pro, redislimit.FixedWindow(5, time.Minute)); via != free {
			t.Errorf("Using the parent's algorithm on a derived Limiter did not give the parent")
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
