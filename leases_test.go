package redislimit_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/redistest"
)

// scriptCalls returns the EVALSHA and EVAL commands c counted.
func scriptCalls(c *counter) int {
	_, m := c.snapshot()
	return m["EVALSHA"] + m["EVAL"]
}

// A hot key is decided from leases: few script calls, every decision
// counted in Redis once the leases are returned.
func TestLeasesHotKey(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		c := b.Client(t)
		counting := &counter{}
		c.AddHook(counting)
		const burst = 100_000
		lim := newRedisLimiter(t, c, redislimit.TokenBucket(100, 24*time.Hour, burst), nil, redislimit.WithLeases(1000, 200*time.Millisecond))
		ctx := context.Background()
		const goroutines, each = 16, 2000
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for range goroutines {
			wg.Go(func() {
				for range each {
					r, err := lim.Allow(ctx, "hot")
					if err != nil {
						t.Error(err)
						return
					}
					if r.Allowed {
						admitted.Add(1)
					}
				}
			})
		}
		wg.Wait()
		calls := scriptCalls(counting)
		if admitted.Load() != goroutines*each {
			t.Fatalf("admitted %d, want %d", admitted.Load(), goroutines*each)
		}
		if calls > goroutines*each/10 {
			t.Errorf("%d script calls for %d decisions, want at most a tenth", calls, goroutines*each)
		}
		if err := lim.ReturnLeases(ctx); err != nil {
			t.Fatal(err)
		}
		r, err := lim.Peek(ctx, "hot")
		if err != nil {
			t.Fatal(err)
		}
		if want := burst - goroutines*each; r.Remaining != want {
			t.Errorf("after ReturnLeases, Remaining %d, want %d", r.Remaining, want)
		}
		t.Logf("%d script calls for %d decisions", calls, goroutines*each)
	})
}
