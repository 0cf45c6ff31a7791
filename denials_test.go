package redislimit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

func TestDenyCacheConfig(t *testing.T) {
	c := redistest.NewClient(t, redistest.Mini(t).Addr())
	for _, n := range []int{0, -1} {
		if _, err := redislimit.New(c, redislimit.FixedWindow(1, time.Second), redislimit.WithDenyCache(n)); !errors.Is(err, redislimit.ErrInvalidConfig) {
			t.Errorf("WithDenyCache(%d): New error %v, want ErrInvalidConfig", n, err)
		}
	}
}

// While Redis denies a key, the deny cache answers without a round trip,
// with Redis's answer aged: the same Result a limiter without the cache
// gets from Redis at the same moment, until the call can succeed.
func TestDenyCacheAnswersWithoutRedis(t *testing.T) {
	ctx := context.Background()
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		for _, row := range algtest.Rows {
			t.Run(row.Name, func(t *testing.T) {
				c := b.needRedis(t, "the deny cache sits in front of Redis")
				counting := &counter{}
				c.AddHook(counting)
				clk := clock.NewFake(epoch)
				cached := newRedisLimiter(t, c, row.Small, clk, redislimit.WithDenyCache(100))
				plain := newRedisLimiter(t, c, row.Small, clk) // same prefix: same state
				for i := 0; i < 5; i++ {
					if r, err := cached.Allow(ctx, "k"); err != nil || !r.Allowed {
						t.Fatalf("Allow #%d = %+v, %v; want allowed", i+1, r, err)
					}
				}
				first, err := cached.Allow(ctx, "k")
				if err != nil || first.Allowed {
					t.Fatalf("Allow on an exhausted key = %+v, %v; want denied", first, err)
				}
				for _, step := range []time.Duration{0, time.Second, 10 * time.Second} {
					clk.Advance(step)
					counting.reset()
					got, err := cached.Allow(ctx, "k")
					if err != nil {
						t.Fatal(err)
					}
					if rt, _ := counting.snapshot(); rt != 0 {
						t.Errorf("+%v: a denied key cost %d round trips, want 0", step, rt)
					}
					want, err := plain.Peek(ctx, "k")
					if err != nil {
						t.Fatal(err)
					}
					// The cache keeps Redis's Remaining; the rest ages as
					// Redis's own answer does.
					want.Remaining = first.Remaining
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("+%v: cached answer differs from Redis's (-redis +cached):\n%s", step, diff)
					}
				}
				clk.Set(epoch.Add(first.RetryAfter))
				counting.reset()
				r, err := cached.Allow(ctx, "k")
				if err != nil || !r.Allowed {
					t.Errorf("Allow at RetryAfter = %+v, %v; want allowed", r, err)
				}
				if rt, _ := counting.snapshot(); rt != 1 {
					t.Errorf("Allow at RetryAfter took %d round trips, want 1", rt)
				}
			})
		}
	})
}

// A cost smaller than the one denied may fit: it goes to Redis.
func TestDenyCacheSmallerCostAsksRedis(t *testing.T) {
	ctx := context.Background()
	c, counting := countedServer(t)
	clk := clock.NewFake(epoch)
	lim := newRedisLimiter(t, c, redislimit.TokenBucket(5, time.Minute, 5), clk, redislimit.WithDenyCache(10))
	if _, err := lim.Allow(ctx, "warm"); err != nil { // dials and loads the script
		t.Fatal(err)
	}
	steps := []struct {
		n           int
		wantAllowed bool
		wantRT      int
	}{
		{3, true, 1},  // 2 left
		{4, false, 1}, // denied: cached for costs of 4 and more
		{5, false, 0}, // a larger cost: cached
		{4, false, 0}, // the same cost: cached
		{3, false, 1}, // smaller: Redis says no too, and the cache learns cost 3
		{4, false, 0},
		{2, true, 1}, // smaller and fits: Redis admits it, the cache forgets the key
		{1, false, 1},
	}
	for i, s := range steps {
		counting.reset()
		r, err := lim.AllowN(ctx, "k", s.n)
		if err != nil {
			t.Fatal(err)
		}
		rt, _ := counting.snapshot()
		if r.Allowed != s.wantAllowed || rt != s.wantRT {
			t.Errorf("step %d: AllowN(%d) = %+v in %d round trips; want allowed %v in %d", i, s.n, r, rt, s.wantAllowed, s.wantRT)
		}
	}
}

// Reset on the limiter clears its cached denial at once; Peek shares it.
func TestDenyCacheResetAndPeek(t *testing.T) {
	ctx := context.Background()
	c, counting := countedServer(t)
	lim := newRedisLimiter(t, c, redislimit.FixedWindow(1, time.Hour), nil, redislimit.WithDenyCache(10))
	for i, want := range []bool{true, false} {
		if r, err := lim.Allow(ctx, "k"); err != nil || r.Allowed != want {
			t.Fatalf("Allow #%d = %+v, %v; want allowed %v", i+1, r, err, want)
		}
	}
	counting.reset()
	if r, err := lim.Peek(ctx, "k"); err != nil || r.Allowed || r.RetryAfter <= 0 {
		t.Errorf("Peek on a denied key = %+v, %v; want a denial", r, err)
	}
	if rt, _ := counting.snapshot(); rt != 0 {
		t.Errorf("Peek on a cached denial took %d round trips, want 0", rt)
	}
	if err := lim.Reset(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if r, err := lim.Allow(ctx, "k"); err != nil || !r.Allowed {
		t.Errorf("Allow after Reset = %+v, %v; want allowed", r, err)
	}
}

// The cache holds at most maxKeys keys.
func TestDenyCacheBound(t *testing.T) {
	ctx := context.Background()
	c := redistest.NewClient(t, redistest.Mini(t).Addr())
	const maxKeys = 10
	lim := newRedisLimiter(t, c, redislimit.FixedWindow(1, time.Hour), nil, redislimit.WithDenyCache(maxKeys))
	for i := 0; i < 200; i++ {
		k := fmt.Sprint("k", i)
		for j := 0; j < 2; j++ {
			if _, err := lim.Allow(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := redislimit.DenyKeys(lim); n > maxKeys || n == 0 {
		t.Errorf("deny cache holds %d keys after 200 denied ones, want 1 to %d", n, maxKeys)
	}
}

// The deny cache never admits more than the limit and stops denying no
// later than Redis does: several clients flooding one hot key get exactly
// a long window's limit, and a token bucket's rate over a second.
func TestDenyCacheExactUnderLoad(t *testing.T) {
	s := redistest.Start(t)
	const clients, workers = 4, 8
	flood := func(t *testing.T, alg redislimit.Algorithm, d time.Duration) (admitted int64, elapsed time.Duration) {
		t.Helper()
		var lims []*redislimit.Limiter
		for i := 0; i < clients; i++ {
			lims = append(lims, newRedisLimiter(t, redistest.NewClient(t, s.Addr()), alg, nil, redislimit.WithDenyCache(100)))
		}
		var n, errs atomic.Int64
		start := time.Now()
		stop := start.Add(d)
		var wg sync.WaitGroup
		for _, lim := range lims {
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(stop) {
						r, err := lim.Allow(context.Background(), "hot")
						if err != nil {
							errs.Add(1)
							return
						}
						if r.Allowed {
							n.Add(1)
						}
					}
				}()
			}
		}
		wg.Wait()
		if errs.Load() != 0 {
			t.Fatalf("%d errors", errs.Load())
		}
		return n.Load(), time.Since(start)
	}
	t.Run("FixedWindow", func(t *testing.T) {
		const limit = 20
		if n, _ := flood(t, redislimit.FixedWindow(limit, time.Hour), 300*time.Millisecond); n != limit {
			t.Errorf("%d admitted, want exactly %d", n, limit)
		}
	})
	t.Run("TokenBucket", func(t *testing.T) {
		const rate = 100 // a token every 10ms, burst 1
		n, elapsed := flood(t, redislimit.TokenBucket(rate, time.Second, 1), time.Second)
		most := 1 + int64(elapsed.Seconds()*rate) + 1
		// A loaded machine stalls the flood now and then; a deny cache
		// that held denials past their RetryAfter would admit far fewer.
		if n > most || n < most/2 {
			t.Errorf("%d admitted in %v, want at most %d and at least half of it", n, elapsed, most)
		}
	})
}

// An algorithm written outside the package gets the deny cache from its
// script's reply alone.
func TestDenyCacheCustomAlgorithm(t *testing.T) {
	ctx := context.Background()
	c, counting := countedServer(t)
	lim := newRedisLimiter(t, c, dailyQuota{limit: 2}, nil, redislimit.WithDenyCache(10))
	for i, want := range []bool{true, true, false} {
		if r, err := lim.Allow(ctx, "k"); err != nil || r.Allowed != want {
			t.Fatalf("Allow #%d = %+v, %v; want allowed %v", i+1, r, err, want)
		}
	}
	counting.reset()
	for i := 0; i < 10; i++ {
		if r, err := lim.Allow(ctx, "k"); err != nil || r.Allowed {
			t.Fatalf("Allow on a denied key = %+v, %v", r, err)
		}
	}
	if rt, _ := counting.snapshot(); rt != 0 {
		t.Errorf("10 denied calls took %d round trips, want 0", rt)
	}
}

// delayReplies is a go-redis hook that holds the reply of the next script
// call for d, after Redis ran it.
type delayReplies struct {
	armed atomic.Bool
	d     time.Duration
}

func (h *delayReplies) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *delayReplies) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == "evalsha" && h.armed.CompareAndSwap(true, false) {
			time.Sleep(h.d)
		}
		return err
	}
}

func (h *delayReplies) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A denial whose reply arrives after a Reset of the same limiter began is
// not cached: Redis's state no longer says so.
func TestDenyCacheResetDuringFlight(t *testing.T) {
	ctx := context.Background()
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	hold := &delayReplies{d: 300 * time.Millisecond}
	c.AddHook(hold)
	alg := redislimit.FixedWindow(1, time.Minute)
	lim := newRedisLimiter(t, c, alg, nil, redislimit.WithDenyCache(10))
	other := newRedisLimiter(t, c, alg, nil) // same prefix, no cache
	if r, err := other.Allow(ctx, "k"); err != nil || !r.Allowed {
		t.Fatalf("exhausting Allow = %+v, %v", r, err)
	}
	hold.armed.Store(true)
	denied := make(chan redislimit.Result, 1)
	go func() {
		r, err := lim.Allow(ctx, "k") // denied by Redis, its reply held
		if err != nil {
			t.Error(err)
		}
		denied <- r
	}()
	time.Sleep(100 * time.Millisecond) // the call has run in Redis
	if err := lim.Reset(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if r := <-denied; r.Allowed {
		t.Fatalf("Allow on an exhausted key = %+v, want denied", r)
	}
	if r, err := lim.Allow(ctx, "k"); err != nil || !r.Allowed {
		t.Errorf("Allow after Reset = %+v, %v; want allowed (a stale denial was cached)", r, err)
	}
}
