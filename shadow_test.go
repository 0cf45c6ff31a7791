package redislimit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// Shadow mode denies no one: a call the limit denies is admitted, marked
// Shadowed, consumes nothing and is reported as its own outcome, for
// every algorithm on every backend, whether Redis, the deny cache or the
// in-process limiter decided.
func TestShadowMode(t *testing.T) {
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		for _, row := range algtest.Rows {
			t.Run(row.Name, func(t *testing.T) {
				b.skipUnlessRuns(t, row)
				ctx := context.Background()
				var mu sync.Mutex
				outcomes := map[redislimit.Outcome]int{}
				observe := func(_ context.Context, o redislimit.Observation) {
					mu.Lock()
					defer mu.Unlock()
					outcomes[o.Outcome]++
					if o.Outcome == redislimit.Shadowed && !o.Allowed {
						t.Errorf("a shadowed Observation with Allowed false")
					}
				}
				lim, _ := b.newLimiter(t, row.Small, clock.NewFake(epoch),
					redislimit.WithShadowMode(), redislimit.WithObserver(observe), redislimit.WithDenyCache(100))
				limit := row.Small.Limit()
				if r, err := lim.AllowN(ctx, "u", limit-1); err != nil || !r.Allowed || r.Shadowed {
					t.Fatalf("AllowN(%d) = %+v, %v; want admitted, not shadowed", limit-1, r, err)
				}
				for range 2 { // Redis, then the deny cache
					r, err := lim.AllowN(ctx, "u", 2)
					if err != nil || !r.Allowed || !r.Shadowed || r.RetryAfter <= 0 || r.Remaining != 1 {
						t.Fatalf("AllowN(2) over 1 remaining = %+v, %v; want admitted, Shadowed, with the denial's RetryAfter and 1 remaining", r, err)
					}
				}
				if r, err := lim.Peek(ctx, "u"); err != nil || !r.Allowed || r.Shadowed || r.Remaining != 1 {
					t.Fatalf("Peek after shadowed calls = %+v, %v; want 1 remaining: they consumed nothing", r, err)
				}
				if r, err := lim.Allow(ctx, "u"); err != nil || !r.Allowed || r.Shadowed || r.Remaining != 0 {
					t.Fatalf("Allow of the last unit = %+v, %v", r, err)
				}
				if r, err := lim.Peek(ctx, "u"); err != nil || !r.Allowed || !r.Shadowed || r.Remaining != 0 {
					t.Fatalf("Peek of an exhausted key = %+v, %v; want admitted and Shadowed", r, err)
				}
				rs, err := lim.AllowMany(ctx, []string{"u", "u"})
				if err != nil {
					t.Fatal(err)
				}
				for i, r := range rs {
					if !r.Allowed || !r.Shadowed {
						t.Errorf("AllowMany result %d = %+v, want admitted and Shadowed", i, r)
					}
				}
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if err := lim.Wait(wctx, "u"); err != nil {
					t.Errorf("Wait on an exhausted key in shadow mode = %v, want nil at once", err)
				}
				mu.Lock()
				defer mu.Unlock()
				// Two AllowN, a Peek, two AllowMany keys and Wait's one try.
				if outcomes[redislimit.Shadowed] != 6 || outcomes[redislimit.Denied] != 0 {
					t.Errorf("observed %v, want 6 shadowed and no denied", outcomes)
				}
			})
		}
	})
}

// With Redis down, FailClosed's denial is shadowed too, and stays
// Degraded.
func TestShadowModeFailClosed(t *testing.T) {
	down := redistest.NewClient(t, closedAddr(t), func(o *redis.Options) { o.MaxRetries, o.DialerRetries = -1, 1 })
	lim, err := redislimit.New(down, redislimit.FixedWindow(10, time.Minute),
		redislimit.WithShadowMode(), redislimit.WithFailurePolicy(redislimit.FailClosed))
	if err != nil {
		t.Fatal(err)
	}
	r, err := lim.Allow(context.Background(), "u")
	if err != nil || !r.Allowed || !r.Shadowed || !r.Degraded {
		t.Errorf("Allow with Redis down = %+v, %v; want admitted, Shadowed and Degraded", r, err)
	}
}
