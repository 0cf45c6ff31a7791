package redislimit_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/admitcheck"
	"github.com/redislimit/redislimit/internal/redistest"
)

// The shape of TestLeasesExactness4x16: processes (each a client and a
// Limiter of its own) and goroutines per process, all on one key.
const (
	exactProcs      = 4
	exactGoroutines = 16
	exactRun        = 1200 * time.Millisecond
)

// exactResult is what one run of runExact saw: the admitted calls, every
// call made, and the leased decisions among them.
type exactResult struct {
	admitted []admitcheck.Call
	calls    int64
	leased   int64
	peeks    []admitcheck.Peeked // when asked for
}

// runExact makes exactProcs limiters of alg with opts, each on a client
// of its own of s, and exactGoroutines goroutines on each calling Allow
// on one key as fast as they can for d. When peek is set, a limiter
// without leases peeks at the key every 2ms meanwhile. Every limiter
// returns its leases at the end.
func runExact(t *testing.T, s *redistest.Server, alg redislimit.Algorithm, d time.Duration, peek bool, opts ...redislimit.Option) exactResult {
	t.Helper()
	ctx := context.Background()
	const key = "hot"
	var res exactResult
	var leased atomic.Int64
	opts = append(opts, redislimit.WithObserver(func(_ context.Context, o redislimit.Observation) {
		if o.Leased {
			leased.Add(1)
		}
	}))
	lims := make([]*redislimit.Limiter, exactProcs)
	for i := range lims {
		c := s.Client(func(o *redis.Options) { o.PoolSize = exactGoroutines })
		lims[i] = newRedisLimiter(t, c, alg, nil, opts...)
		// Dial and load the script before the run, on another key.
		if _, err := lims[i].Peek(ctx, "warm"); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(d).UnixNano()
	for _, lim := range lims {
		for range exactGoroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []admitcheck.Call
				var calls int64
				for {
					start := time.Now().UnixNano()
					r, err := lim.Allow(ctx, key)
					end := time.Now().UnixNano()
					if err != nil {
						t.Errorf("Allow: %v", err)
						break
					}
					calls++
					if r.Allowed {
						mine = append(mine, admitcheck.Call{Start: start, End: end})
					}
					if end >= deadline {
						break
					}
				}
				mu.Lock()
				res.admitted = append(res.admitted, mine...)
				res.calls += calls
				mu.Unlock()
			}()
		}
	}
	if peek {
		watcher := newRedisLimiter(t, s.Client(), alg, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().UnixNano() < deadline {
				start := time.Now().UnixNano()
				r, err := watcher.Peek(ctx, key)
				end := time.Now().UnixNano()
				if err != nil {
					t.Errorf("Peek: %v", err)
					return
				}
				res.peeks = append(res.peeks, admitcheck.Peeked{Start: start, End: end, ResetAfter: r.ResetAfter})
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	for _, lim := range lims {
		if err := lim.ReturnLeases(ctx); err != nil {
			t.Errorf("ReturnLeases: %v", err)
		}
	}
	res.leased = leased.Load()
	return res
}

// TestLeasesExactness4x16 runs four limiters with leases, each on its
// own client as four processes would, sixteen goroutines each, on one
// hot key of a real Redis, and checks the admitted calls against the
// limit: a token bucket never admits more than burst + rate × elapsed
// since its first call, a fixed window never more than its limit in a
// window; and leases held by one limiter do not starve the others, so
// that at least 90% of what the limit allows is admitted.
func TestLeasesExactness4x16(t *testing.T) {
	s := redistest.Start(t)
	leases := redislimit.WithLeases(10_000, 50*time.Millisecond)

	t.Run("TokenBucket", func(t *testing.T) {
		const rate, burst = 20_000, 2_000
		res := runExact(t, s, redislimit.TokenBucket(rate, time.Second, burst), exactRun, false, leases)
		calls := admitcheck.New(res.admitted)
		t0 := calls.FirstStart()
		worst := calls.TokenBucket(t0, burst, rate, time.Second)
		last := res.admitted[0].End
		for _, c := range res.admitted {
			last = max(last, c.End)
		}
		bound := float64(burst) + float64(rate)*time.Duration(last-t0).Seconds()
		t.Logf("%d calls, %d admitted (%d from leases) of %.0f allowed in %v; closest to the bound: %v",
			res.calls, calls.Len(), res.leased, bound, time.Duration(last-t0), worst)
		if worst.Over > 0 {
			t.Errorf("admitted past burst + rate × elapsed: %v", worst)
		}
		checkDemand(t, res.calls, bound, calls.Len())
	})

	t.Run("FixedWindow", func(t *testing.T) {
		const limit, window = 2_000, 100 * time.Millisecond
		res := runExact(t, s, redislimit.FixedWindow(limit, window), exactRun, true, leases)
		calls := admitcheck.New(res.admitted)
		ends := admitcheck.WindowEnds(res.peeks, time.Microsecond)
		t0 := calls.FirstStart()
		var last int64
		for _, c := range res.admitted {
			last = max(last, c.End)
		}
		// Every window that closed during the run must have been seen,
		// or the check below skips it.
		closed := int(time.Duration(last-t0) / window)
		if len(ends) < closed {
			t.Fatalf("peeks saw %d window ends in %v, want at least %d", len(ends), time.Duration(last-t0), closed)
		}
		worst := calls.Windows(ends, window, limit)
		sliding := calls.Sliding(window, 2*limit)
		t.Logf("%d calls, %d admitted (%d from leases) in %d windows; worst window: %v; worst %v span: %v",
			res.calls, calls.Len(), res.leased, len(ends), worst, window, sliding)
		if worst.Over > 0 {
			t.Errorf("a window admitted past its limit: %v", worst)
		}
		if sliding.Over > 0 {
			t.Errorf("a span of one window admitted past twice the limit: %v", sliding)
		}
		checkDemand(t, res.calls, float64(closed*limit), calls.Len())
	})
}

// checkDemand checks that the calls made asked for more than bound, what
// the limit allowed over the run, and that admitted is at least 90% of
// it.
func checkDemand(t *testing.T, calls int64, bound float64, admitted int) {
	t.Helper()
	if float64(calls) < 1.1*bound {
		t.Fatalf("fixture: %d calls, under 110%% of the %.0f the limit allows", calls, bound)
	}
	if float64(admitted) < 0.9*bound {
		t.Errorf("%d admitted of %.0f allowed (%.1f%%), want at least 90%%", admitted, bound, 100*float64(admitted)/bound)
	}
}
