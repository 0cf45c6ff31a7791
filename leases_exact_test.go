package redislimit_test

import (
	"context"
	"fmt"
	"strconv"
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
// call made, and the leased decisions among them. The goroutines stop
// calling once a call returns at deadline or later.
type exactResult struct {
	deadline int64 // Unix ns
	admitted []admitcheck.Call
	calls    int64
	leased   int64
	peeks    []admitcheck.Peeked // when asked for
}

// runExact makes exactProcs limiters of alg with opts, each on a client
// of its own of s, and exactGoroutines goroutines on each calling Allow
// on key as fast as they can for d. When peek is set, a limiter
// without leases peeks at the key every 2ms meanwhile. Every limiter
// returns its leases at the end.
func runExact(t *testing.T, s *redistest.Server, alg redislimit.Algorithm, key string, d time.Duration, peek bool, opts ...redislimit.Option) exactResult {
	t.Helper()
	ctx := context.Background()
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
	res.deadline = deadline
	for _, lim := range lims {
		for range exactGoroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mine, calls, err := admitcheck.Record(deadline, func() (bool, error) {
					r, err := lim.Allow(ctx, key)
					return r.Allowed, err
				})
				if err != nil {
					t.Errorf("Allow: %v", err)
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
		untilMet(t, func(key string) error {
			res := runExact(t, s, redislimit.TokenBucket(rate, time.Second, burst), key, exactRun, false, leases)
			calls := admitcheck.New(res.admitted)
			t0 := calls.FirstStart()
			worst := calls.TokenBucket(t0, burst, rate, time.Second)
			// Every goroutine calls until the deadline: the limit should
			// be met by then.
			bound := float64(burst) + float64(rate)*time.Duration(res.deadline-t0).Seconds()
			byDeadline := calls.ReturnedBefore(res.deadline)
			t.Logf("%d calls, %d admitted (%d from leases), %d of them by the deadline, of %.0f allowed in %v; closest to the bound: %v",
				res.calls, calls.Len(), res.leased, byDeadline, bound, time.Duration(res.deadline-t0), worst)
			if worst.Over > 0 {
				t.Errorf("admitted past burst + rate × elapsed: %v", worst)
			}
			return admitcheck.Met(res.calls, int64(byDeadline), bound)
		})
	})

	t.Run("FixedWindow", func(t *testing.T) {
		const limit, window = 2_000, 100 * time.Millisecond
		untilMet(t, func(key string) error {
			res := runExact(t, s, redislimit.FixedWindow(limit, window), key, exactRun, true, leases)
			calls := admitcheck.New(res.admitted)
			ends := admitcheck.WindowEnds(res.peeks, time.Microsecond)
			t0 := calls.FirstStart()
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
			// Every window that closed during the run must have been
			// seen, or the check above skipped it.
			closed := int(time.Duration(res.deadline-t0) / window)
			if len(ends) < closed {
				return fmt.Errorf("peeks saw %d window ends in %v, want at least %d", len(ends), time.Duration(res.deadline-t0), closed)
			}
			return admitcheck.Met(res.calls, int64(calls.ReturnedBefore(res.deadline)), float64(closed*limit))
		})
	})
}

// metAttempts bounds the runs of untilMet.
const metAttempts = 3

// untilMet runs f on a fresh key until it returns nil, at most
// metAttempts times, and fails t with its last error. f fails t itself
// on a breach of the limit, which ends the runs at once: only a run that
// fell short of the limit, which a loaded machine that starves every
// caller for a while causes too, is run again.
func untilMet(t *testing.T, f func(key string) error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		err := f("hot-" + strconv.Itoa(attempt))
		switch {
		case err == nil || t.Failed():
			return
		case attempt == metAttempts:
			t.Errorf("run %d of %d: %v", attempt, metAttempts, err)
			return
		}
		t.Logf("run %d of %d: %v; running again", attempt, metAttempts, err)
	}
}
