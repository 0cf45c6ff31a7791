package redislimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// A key whose limit was lowered below the leases it holds frees a slot only
// when enough of them have ended: RetryAfter must not point at a moment when
// an Acquire is still denied.
func TestReviewConcurrencyRetryAfterWithLimitLowered(t *testing.T) {
	s := redistest.Start(t)
	c := s.Client()
	ctx := context.Background()
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	wide := newConcurrency(t, c, 3, 10*time.Second, clk)
	narrow := newConcurrency(t, c, 1, 10*time.Second, clk)
	for i := 0; i < 3; i++ {
		if _, res, err := wide.Acquire(ctx, "k"); err != nil || !res.Allowed {
			t.Fatalf("Acquire %d: %+v, %v", i, res, err)
		}
		clk.Advance(time.Second)
	}
	_, res, err := narrow.Acquire(ctx, "k")
	if err != nil || res.Allowed {
		t.Fatalf("narrow Acquire: %+v, %v; want denied", res, err)
	}
	clk.Advance(res.RetryAfter)
	_, again, err := narrow.Acquire(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Allowed {
		t.Errorf("Acquire after RetryAfter %v denied again (%+v): RetryAfter names the first expiry, but 2 leases must end before a slot of limit 1 frees", res.RetryAfter, again)
	}
}
