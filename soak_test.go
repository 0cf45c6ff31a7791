package redislimit_test

import (
	"context"
	"flag"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/redistest"
)

var soakFor = flag.Duration("soak", 3*time.Second, "how long TestSoak runs")

// TestSoak runs many goroutines on several clients against one real
// redis-server for -soak (3s by default; skipped with -short): no key
// admits more than its limit, every error reaches OnError, and every key
// has a TTL at the end.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test; run without -short")
	}
	const (
		clients = 4
		workers = 8 // per client
		keys    = 16
		limit   = 200
	)
	s := redistest.Start(t)
	ctx := context.Background()
	for _, alg := range []redislimit.Algorithm{
		// Periods far longer than the soak, so that nothing refills.
		redislimit.FixedWindow(limit, time.Hour),
		redislimit.SlidingLog(limit, time.Hour),
		redislimit.TokenBucket(1, time.Hour, limit),
	} {
		t.Run(alg.Name(), func(t *testing.T) {
			var admitted [keys]atomic.Int64
			var calls, errs, reported atomic.Int64
			stop := time.Now().Add(*soakFor / 3)
			var wg sync.WaitGroup
			for i := 0; i < clients; i++ {
				lim, err := redislimit.New(s.Client(), alg, redislimit.WithPrefix(testPrefix(t)), redislimit.WithTimeout(5*time.Second),
					redislimit.WithOnError(func(context.Context, error) { reported.Add(1) }))
				if err != nil {
					t.Fatal(err)
				}
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for j := 0; time.Now().Before(stop); j++ {
							k := (j*7 + w) % keys
							n := 1 + j%3
							r, err := lim.AllowN(ctx, "key"+strconv.Itoa(k), n)
							calls.Add(1)
							if err != nil {
								errs.Add(1)
								continue
							}
							if r.Degraded {
								t.Errorf("degraded decision without a policy: %+v", r)
							}
							if r.Allowed {
								admitted[k].Add(int64(n))
							}
						}
					}()
				}
			}
			wg.Wait()
			t.Logf("%d decisions, %d errors", calls.Load(), errs.Load())
			if errs.Load() != reported.Load() {
				t.Errorf("%d errors returned, %d reported to OnError", errs.Load(), reported.Load())
			}
			for k := range admitted {
				// Costs of 1 keep coming, so a key ends exactly full.
				if got := admitted[k].Load(); got > limit || got < limit && errs.Load() == 0 {
					t.Errorf("key%d: %d units admitted, want exactly the limit %d", k, got, limit)
				}
			}
			c := s.Client()
			rkeys, err := c.Keys(ctx, testPrefix(t)+"*").Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(rkeys) != keys {
				t.Errorf("%d Redis keys, want %d", len(rkeys), keys)
			}
			for _, rk := range rkeys {
				if ttl, err := c.PTTL(ctx, rk).Result(); err != nil || ttl <= 0 {
					t.Errorf("%s: PTTL %v, %v; want a TTL", rk, ttl, err)
				}
			}
		})
	}
}
