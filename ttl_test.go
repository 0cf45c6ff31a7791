package redislimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/redislimit/redislimit/internal/algtest"
	"github.com/redislimit/redislimit/internal/clock"
)

// A key lives a margin past the moment its state stops mattering: with 1ms
// windows, on real Redis servers, a key exhausted at a moment of the
// limiter's clock is still there, and still denies, after more than its
// window of real time has passed while the clock stood still.
func TestShortWindowsOutliveTheirState(t *testing.T) {
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		if b.name == "miniredis" {
			t.Skip("miniredis counts TTLs only when told to fast-forward")
		}
		c := b.needRedis(t, "TTLs are Redis's")
		ctx := context.Background()
		for _, row := range algtest.Rows {
			t.Run(row.Name, func(t *testing.T) {
				if row.MinPeriod > time.Millisecond {
					t.Skipf("%s has no period under %v", row.Name, row.MinPeriod)
				}
				clk := clock.NewFake(epoch)
				lim := newRedisLimiter(t, c, row.New(3, time.Millisecond), clk)
				for i := 0; i < 3; i++ {
					if r, err := lim.Allow(ctx, "k"); err != nil || !r.Allowed {
						t.Fatalf("Allow #%d = %+v, %v", i, r, err)
					}
				}
				for i := 0; i < 5; i++ {
					time.Sleep(2 * time.Millisecond)
					if r, err := lim.Allow(ctx, "k"); err != nil || r.Allowed {
						t.Fatalf("after %d ms of real time with the clock still: %+v, %v; want denied", 2*(i+1), r, err)
					}
				}
				if n := keysUnder(t, c); n == 0 {
					t.Errorf("no key left %v after it was written", 10*time.Millisecond)
				}
				// One window later on the limiter's clock, it admits again.
				clk.Advance(2 * time.Millisecond)
				if r, err := lim.Allow(ctx, "k"); err != nil || !r.Allowed {
					t.Errorf("a window later: %+v, %v; want allowed", r, err)
				}
			})
		}
	})
}
