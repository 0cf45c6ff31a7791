package redislimit_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/faultproxy"
	"github.com/redislimit/redislimit/internal/redistest"
)

// scriptCalls returns the EVALSHA and EVAL commands c counted.
func scriptCalls(c *counter) int {
	_, m := c.snapshot()
	return m["EVALSHA"] + m["EVAL"]
}

// tally counts the decisions of a pound.
type tally struct {
	admitted, shadowed, degraded, leased, errs atomic.Int64
}

// pound makes each of goroutines goroutines call Allow on key each
// times, or until ctx ends, and counts the outcomes. Errors other than
// the context's fail the test.
func pound(t *testing.T, ctx context.Context, lim *redislimit.Limiter, key string, goroutines, each int) *tally {
	t.Helper()
	var n tally
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				r, err := lim.Allow(ctx, key)
				switch {
				case err != nil && ctx.Err() != nil:
					n.errs.Add(1)
					return
				case err != nil:
					t.Errorf("Allow: %v", err)
					return
				case r.Shadowed:
					n.shadowed.Add(1)
				case r.Degraded && r.Allowed:
					n.degraded.Add(1)
				case r.Allowed:
					n.admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return &n
}

// leaseRows are the algorithms the lease tests run, with large limits
// and long spans so that nothing refills or rolls over during a test;
// exact says whether a lease's unused units go back to Redis.
var leaseRows = []struct {
	name  string
	alg   func(limit int) redislimit.Algorithm
	exact bool
}{
	{"TokenBucket", func(limit int) redislimit.Algorithm { return redislimit.TokenBucket(1000, 24*time.Hour, limit) }, true},
	{"FixedWindow", func(limit int) redislimit.Algorithm { return redislimit.FixedWindow(limit, time.Hour) }, true},
	{"SlidingWindow", func(limit int) redislimit.Algorithm { return redislimit.SlidingWindow(limit, time.Hour) }, true},
	{"CalendarQuota", func(limit int) redislimit.Algorithm {
		return redislimit.CalendarQuota(limit, redislimit.Monthly, time.UTC)
	}, true},
	{"SlidingLog", func(limit int) redislimit.Algorithm { return redislimit.SlidingLog(limit, time.Hour) }, false},
	{"All", func(limit int) redislimit.Algorithm {
		return redislimit.All(redislimit.TokenBucket(1000, 24*time.Hour, limit), redislimit.FixedWindow(2*limit, time.Hour))
	}, true},
}

// A hot key is decided from leases, with few script calls, and never over
// the limit: with demand below it every call is admitted, with demand
// above it no more than the limit is. Once the leases are returned, Redis
// holds exactly what was admitted, for every algorithm whose unused units
// go back.
func TestLeasesEveryAlgorithm(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		for _, row := range leaseRows {
			t.Run(row.name, func(t *testing.T) {
				for _, tc := range []struct {
					name  string
					limit int
				}{{"under", 20_000}, {"over", 5_000}} {
					t.Run(tc.name, func(t *testing.T) {
						c := b.Client(t)
						counting := &counter{}
						c.AddHook(counting)
						lim := newRedisLimiter(t, c, row.alg(tc.limit), nil, redislimit.WithLeases(1000, time.Minute))
						ctx := context.Background()
						const goroutines, each = 16, 1000
						n := pound(t, ctx, lim, "hot", goroutines, each)
						admitted := int(n.admitted.Load())
						calls := scriptCalls(counting)
						if want := min(goroutines*each, tc.limit); admitted > want {
							t.Fatalf("admitted %d, above the limit of %d", admitted, want)
						}
						if tc.limit > goroutines*each && admitted != goroutines*each {
							t.Fatalf("admitted %d of %d calls, all under the limit", admitted, goroutines*each)
						}
						if err := lim.ReturnLeases(ctx); err != nil {
							t.Fatalf("ReturnLeases: %v", err)
						}
						r, err := lim.Peek(ctx, "hot")
						if err != nil {
							t.Fatal(err)
						}
						if row.exact && r.Remaining != tc.limit-admitted {
							t.Errorf("Remaining %d after ReturnLeases, want %d: limit %d, %d admitted", r.Remaining, tc.limit-admitted, tc.limit, admitted)
						}
						if !row.exact && r.Remaining > tc.limit-admitted {
							t.Errorf("Remaining %d after ReturnLeases, above the %d not admitted", r.Remaining, tc.limit-admitted)
						}
						if tc.limit > goroutines*each && calls > goroutines*each/10 {
							t.Errorf("%d script calls for %d decisions, want at most a tenth", calls, goroutines*each)
						}
						t.Logf("%d admitted, %d script calls, Remaining %d", admitted, calls, r.Remaining)
					})
				}
			})
		}
	})
}

// heat makes key hot on the fake clock: 400 calls, 1 ms apart in tens,
// each admitted.
func heat(t *testing.T, lim *redislimit.Limiter, clk *clock.Fake, key string) int {
	t.Helper()
	for i := range 400 {
		r, err := lim.Allow(context.Background(), key)
		if err != nil || !r.Allowed {
			t.Fatalf("call %d: %+v, %v", i, r, err)
		}
		if i%10 == 9 {
			clk.Advance(time.Millisecond)
		}
	}
	return 400
}

// A fixed window's lease ends with its window, and its units go back
// only while that window is current: a give-back that comes later would
// free units of the next window, which the lease never took.
func TestLeasesFixedWindowGiveBackEndsWithWindow(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		for _, late := range []bool{false, true} {
			name := "before-window-end"
			if late {
				name = "after-window-end"
			}
			t.Run(name, func(t *testing.T) {
				c := b.Client(t)
				clk := clock.NewFake(epoch)
				const limit = 10_000
				alg := redislimit.FixedWindow(limit, time.Second)
				var leased atomic.Int64
				lim := newRedisLimiter(t, c, alg, clk, redislimit.WithLeases(1000, time.Hour),
					redislimit.WithObserver(func(_ context.Context, o redislimit.Observation) {
						if o.Leased {
							leased.Add(1)
						}
					}))
				exact := newRedisLimiter(t, c, alg, clk)
				admitted := heat(t, lim, clk, "k")
				if leased.Load() == 0 {
					t.Fatal("no decision came from a lease")
				}
				ctx := context.Background()
				if late {
					// Past the window's end, the old lease admits nothing
					// and gives nothing back: Redis holds this call alone.
					clk.Advance(time.Second)
					if r, err := lim.Allow(ctx, "k"); err != nil || !r.Allowed {
						t.Fatal(r, err)
					}
					if err := lim.ReturnLeases(ctx); err != nil {
						t.Fatal(err)
					}
					if r, _ := exact.Peek(ctx, "k"); r.Remaining != limit-1 {
						t.Errorf("Remaining %d in the new window after 1 call, want %d", r.Remaining, limit-1)
					}
					return
				}
				if err := lim.ReturnLeases(ctx); err != nil {
					t.Fatal(err)
				}
				if r, _ := exact.Peek(ctx, "k"); r.Remaining != limit-admitted {
					t.Errorf("Remaining %d, want %d: the lease's units were not all given back", r.Remaining, limit-admitted)
				}
			})
		}
	})
}

// A key that cools down decides in Redis again, one script call a
// decision.
func TestLeasesCoolKeyIsExact(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		c := b.Client(t)
		counting := &counter{}
		c.AddHook(counting)
		clk := clock.NewFake(epoch)
		var last redislimit.Observation
		lim := newRedisLimiter(t, c, redislimit.TokenBucket(1000, time.Hour, 10_000), clk,
			redislimit.WithLeases(1000, 100*time.Millisecond),
			redislimit.WithObserver(func(_ context.Context, o redislimit.Observation) { last = o }))
		heat(t, lim, clk, "k")
		if calls := scriptCalls(counting); calls > 40 {
			t.Errorf("%d script calls for 400 hot decisions", calls)
		}
		ctx := context.Background()
		cool := 0
		for i := range 8 {
			clk.Advance(time.Second)
			before := scriptCalls(counting)
			r, err := lim.Allow(ctx, "k")
			if err != nil || !r.Allowed {
				t.Fatal(r, err)
			}
			if i < 2 {
				continue // the first calls still see the hot rate
			}
			if last.Leased || last.RoundTrips != 1 {
				t.Errorf("cool call %d: %+v, want an exact decision in Redis", i, last)
			}
			if got := scriptCalls(counting) - before; got < 1 {
				t.Errorf("cool call %d: %d script calls", i, got)
			}
			cool += scriptCalls(counting) - before
		}
		// Six exact decisions, and the give-backs of the leases that the
		// first two calls may have taken, sent in the background.
		if cool > 6+2 {
			t.Errorf("%d script calls for 6 cool decisions", cool)
		}
	})
}

// Options are checked; the in-flight limiter refuses leases.
func TestLeasesOptions(t *testing.T) {
	c := redistest.NewClient(t, redistest.Mini(t).Addr())
	for _, o := range []redislimit.Option{
		redislimit.WithLeases(0, time.Second),
		redislimit.WithLeases(-1, time.Second),
		redislimit.WithLeases(redislimit.MaxDebit+1, time.Second),
		redislimit.WithLeases(10, 0),
		redislimit.WithLeases(10, -time.Second),
		redislimit.WithLeases(10, redislimit.MaxWindow+time.Second),
	} {
		if _, err := redislimit.New(c, redislimit.FixedWindow(10, time.Second), o); !errors.Is(err, redislimit.ErrInvalidConfig) {
			t.Errorf("New: %v, want ErrInvalidConfig", err)
		}
	}
	if _, err := redislimit.NewConcurrency(c, 10, time.Second, redislimit.WithLeases(10, time.Second)); !errors.Is(err, redislimit.ErrInvalidConfig) {
		t.Errorf("NewConcurrency with leases: %v, want ErrInvalidConfig", err)
	}
	lim, err := redislimit.NewLocal(redislimit.FixedWindow(10, time.Second), redislimit.WithLeases(10, time.Second))
	if err != nil {
		t.Fatalf("NewLocal with leases: %v", err)
	}
	if err := lim.ReturnLeases(context.Background()); err != nil {
		t.Errorf("ReturnLeases in process: %v", err)
	}
}

// The observer says which decisions came from a lease: those made no
// round trip.
func TestLeasesObserver(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	var leased, fromRedis, leasedTrips atomic.Int64
	lim := newRedisLimiter(t, c, redislimit.TokenBucket(1000, time.Hour, 100_000), nil,
		redislimit.WithLeases(1000, time.Minute),
		redislimit.WithObserver(func(_ context.Context, o redislimit.Observation) {
			switch {
			case o.Leased && o.RoundTrips == 0:
				leased.Add(1)
			case o.Leased:
				leasedTrips.Add(1)
			case o.RoundTrips == 1:
				fromRedis.Add(1)
			}
			if o.Outcome != redislimit.Allowed {
				t.Errorf("outcome %v", o.Outcome)
			}
		}))
	pound(t, context.Background(), lim, "k", 16, 500)
	if leased.Load() == 0 || leased.Load()+leasedTrips.Load()+fromRedis.Load() != 8000 {
		t.Errorf("%d leased, %d leased after a round trip, %d from Redis, want 8000 in all, most leased", leased.Load(), leasedTrips.Load(), fromRedis.Load())
	}
	if leased.Load() < 4000 {
		t.Errorf("only %d of 8000 hot decisions came from leases", leased.Load())
	}
}

// Callers whose context ends while a lease is on its way leave its units
// to the others, or to Redis: none is lost, and ReturnLeases waits for
// the requests in flight.
func TestLeasesCancelledMidLease(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		c := b.Client(t)
		const burst = 100_000
		lim := newRedisLimiter(t, c, redislimit.TokenBucket(1000, 24*time.Hour, burst), nil, redislimit.WithLeases(5000, time.Minute))
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(30*time.Millisecond, cancel)
		n := pound(t, ctx, lim, "k", 16, 1_000_000)
		if n.errs.Load() == 0 {
			t.Fatal("no call saw its context end")
		}
		if err := lim.ReturnLeases(context.Background()); err != nil {
			t.Fatal(err)
		}
		r, err := lim.Peek(context.Background(), "k")
		if err != nil {
			t.Fatal(err)
		}
		// A call given up on may still consume in Redis, as it may without
		// leases: at most one per goroutine. A lease's units all come back.
		if want := burst - int(n.admitted.Load()); r.Remaining > want || r.Remaining < want-16 {
			t.Errorf("Remaining %d, want %d, or up to 16 fewer: %d admitted", r.Remaining, want, n.admitted.Load())
		}
	})
}

// SCRIPT FLUSH between leases: the next lease request loads the script
// again, and nothing is lost.
func TestLeasesScriptFlush(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		c := b.Client(t)
		const burst = 100_000
		lim := newRedisLimiter(t, c, redislimit.FixedWindow(burst, time.Hour), nil, redislimit.WithLeases(1000, time.Minute))
		ctx := context.Background()
		n1 := pound(t, ctx, lim, "k", 16, 500)
		flushScripts(t, c)
		if err := lim.ReturnLeases(ctx); err != nil {
			t.Fatalf("ReturnLeases after SCRIPT FLUSH: %v", err)
		}
		flushScripts(t, c)
		n2 := pound(t, ctx, lim, "k", 16, 500)
		if got := n1.admitted.Load() + n2.admitted.Load(); got != 16000 {
			t.Fatalf("admitted %d of 16000", got)
		}
		if err := lim.ReturnLeases(ctx); err != nil {
			t.Fatal(err)
		}
		if r, _ := lim.Peek(ctx, "k"); r.Remaining != burst-16000 {
			t.Errorf("Remaining %d, want %d", r.Remaining, burst-16000)
		}
	})
}

// A limiter derived with Using takes its own leases, which the parent's
// ReturnLeases gives back too.
func TestLeasesUsing(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	lim := newRedisLimiter(t, c, redislimit.TokenBucket(1000, 24*time.Hour, 1000), nil, redislimit.WithLeases(1000, time.Minute))
	pro, err := lim.Using(redislimit.TokenBucket(1000, 24*time.Hour, 50_000))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n := pound(t, ctx, pro, "tenant", 16, 500)
	if n.admitted.Load() != 8000 {
		t.Fatalf("admitted %d of 8000", n.admitted.Load())
	}
	if err := lim.ReturnLeases(ctx); err != nil {
		t.Fatal(err)
	}
	if r, _ := pro.Peek(ctx, "tenant"); r.Remaining != 50_000-8000 {
		t.Errorf("Remaining %d, want %d", r.Remaining, 50_000-8000)
	}
}

// With the deny cache and shadow mode, leases never admit more than the
// limit.
func TestLeasesDenyCacheAndShadow(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	const limit = 3000
	for _, o := range []struct {
		name string
		opt  redislimit.Option
	}{{"deny-cache", redislimit.WithDenyCache(100)}, {"shadow", redislimit.WithShadowMode()}} {
		t.Run(o.name, func(t *testing.T) {
			lim := newRedisLimiter(t, c, redislimit.FixedWindow(limit, time.Hour), nil, redislimit.WithLeases(500, time.Minute), o.opt)
			ctx := context.Background()
			n := pound(t, ctx, lim, "k", 16, 500)
			if got := n.admitted.Load(); got > limit {
				t.Fatalf("admitted %d, above the limit of %d", got, limit)
			}
			if err := lim.ReturnLeases(ctx); err != nil {
				t.Fatal(err)
			}
			r, _ := lim.Peek(ctx, "k")
			if got := int(n.admitted.Load()) + r.Remaining; got != limit {
				t.Errorf("admitted %d and %d remaining, want %d in all", n.admitted.Load(), r.Remaining, limit)
			}
			if o.name == "shadow" && n.admitted.Load()+n.shadowed.Load() != 8000 {
				t.Errorf("shadow mode: %d admitted and %d shadowed, want 8000", n.admitted.Load(), n.shadowed.Load())
			}
		})
	}
}

// With Redis stalled, a lease already held keeps admitting until it ends;
// then the failure policy decides, and OnError hears of it. The units a
// stalled give-back could not return stay consumed: Redis never holds
// more than was not admitted.
func TestLeasesRedisStalled(t *testing.T) {
	for _, policy := range []redislimit.FailurePolicy{redislimit.FailOpen, redislimit.FailLocal} {
		t.Run(policy.String(), func(t *testing.T) {
			s := redistest.Start(t)
			p := faultproxy.Start(t, s.Addr())
			c := redistest.NewClient(t, p.Addr())
			direct := redistest.NewClient(t, s.Addr())
			const burst = 1_000_000
			var errs atomic.Int64
			lim, err := redislimit.New(c, redislimit.TokenBucket(1000, 24*time.Hour, burst),
				redislimit.WithPrefix(testPrefix(t)), redislimit.WithTimeout(200*time.Millisecond),
				redislimit.WithFailurePolicy(policy), redislimit.WithLeases(2000, 300*time.Millisecond),
				redislimit.WithOnError(func(context.Context, error) { errs.Add(1) }))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			n1 := pound(t, ctx, lim, "k", 16, 500)
			p.Stall()
			n2 := pound(t, ctx, lim, "k", 16, 500)
			if n2.degraded.Load() == 0 {
				t.Error("no decision was degraded with Redis stalled")
			}
			if errs.Load() == 0 {
				t.Error("OnError heard nothing with Redis stalled")
			}
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err = lim.ReturnLeases(rctx)
			cancel()
			if err == nil && n2.admitted.Load() > 0 {
				t.Log("the leases ended before the stall")
			}
			p.Heal()
			// Let any give-back still in flight land.
			time.Sleep(300 * time.Millisecond)
			exact, err := redislimit.New(direct, redislimit.TokenBucket(1000, 24*time.Hour, burst), redislimit.WithPrefix(testPrefix(t)))
			if err != nil {
				t.Fatal(err)
			}
			r, err := exact.Peek(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			// Every unit admitted without degrading was consumed in Redis.
			if max := burst - int(n1.admitted.Load()+n2.admitted.Load()); r.Remaining > max {
				t.Errorf("Remaining %d, above the %d not admitted from Redis or its leases", r.Remaining, max)
			}
		})
	}
}

var _ redis.Scripter = (*redis.Client)(nil)

// Reset ends the limiter's lease of the key: after it, the key admits
// its capacity and no more.
func TestLeasesReset(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	const limit = 5000
	lim := newRedisLimiter(t, c, redislimit.FixedWindow(limit, time.Hour), nil, redislimit.WithLeases(1000, time.Minute))
	ctx := context.Background()
	pound(t, ctx, lim, "k", 16, 200)
	if err := lim.Reset(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	n := pound(t, ctx, lim, "k", 16, 1000)
	if got := n.admitted.Load(); got > limit {
		t.Errorf("admitted %d after Reset, above the limit of %d", got, limit)
	}
}

// AllowMany admits from a lease the keys that hold one, and sends the
// others; a decision from a lease allocates nothing.
func TestLeasesAllowManyAndAllocs(t *testing.T) {
	c, counting := countedServer(t)
	clk := clock.NewFake(epoch)
	lim := newRedisLimiter(t, c, redislimit.FixedWindow(100_000, time.Hour), clk, redislimit.WithLeases(1000, time.Hour))
	heat(t, lim, clk, "hot")
	ctx := context.Background()
	counting.reset()
	res, err := lim.AllowMany(ctx, []string{"hot", "cold", "hot"})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if !r.Allowed {
			t.Errorf("key %d denied: %+v", i, r)
		}
	}
	if calls := scriptCalls(counting); calls != 1 {
		t.Errorf("AllowMany sent %d script calls, want 1, for the cold key", calls)
	}
	if a := testing.AllocsPerRun(100, func() {
		if r, err := lim.Allow(ctx, "hot"); err != nil || !r.Allowed {
			t.Fatal(r, err)
		}
	}); a != 0 {
		t.Errorf("a decision from a lease allocates %v times, want 0", a)
	}
}
