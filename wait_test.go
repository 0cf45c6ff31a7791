package redislimit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/redistest"
)

// Wait admits calls at the limit's rate, sleeping between them, on every
// backend.
func TestWaitAdmitsAtTheRate(t *testing.T) {
	ctx := context.Background()
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		lim, _ := b.newLimiter(t, redislimit.TokenBucket(20, time.Second, 1), nil)
		start := time.Now()
		const calls = 8
		for i := 0; i < calls; i++ {
			if err := lim.Wait(ctx, "k"); err != nil {
				t.Fatalf("Wait #%d: %v", i+1, err)
			}
		}
		// A token every 50ms, the first one free.
		if took := time.Since(start); took < (calls-1)*50*time.Millisecond-10*time.Millisecond || took > 5*time.Second {
			t.Errorf("%d Waits took %v, want about %v", calls, took, (calls-1)*50*time.Millisecond)
		}
	})
}

// A deadline that comes before the call could be admitted returns at once;
// a context that ends while Wait sleeps returns its error.
func TestWaitDeadlineAndCancel(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		lim := newRedisLimiter(t, b.Client(t), redislimit.FixedWindow(1, time.Hour), nil)
		if err := lim.Wait(context.Background(), "k"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		err := lim.Wait(ctx, "k")
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
			t.Errorf("Wait whose deadline comes before the window ends = %v after %v; want DeadlineExceeded at once", err, time.Since(start))
		}

		short := newRedisLimiter(t, b.Client(t), redislimit.FixedWindow(1, 2*time.Second), nil, redislimit.WithPrefix(testPrefix(t)+"short:"))
		if err := short.Wait(context.Background(), "k"); err != nil {
			t.Fatal(err)
		}
		cctx, ccancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, ccancel)
		start = time.Now()
		if err := short.Wait(cctx, "k"); !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
			t.Errorf("Wait cancelled while sleeping = %v after %v; want context.Canceled soon after 100ms", err, time.Since(start))
		}
		if err := short.WaitN(context.Background(), "k", 2); !errors.Is(err, redislimit.ErrCostExceedsLimit) {
			t.Errorf("WaitN above the capacity = %v, want ErrCostExceedsLimit", err)
		}
	})
}

// Many waiters on one key get through at the limit's rate without a
// stampede: about one or two script calls per admission, not one per
// waiter per unit freed.
func TestWaitManyWaitersNoStampede(t *testing.T) {
	ctx := context.Background()
	c, counting := countedServer(t)
	lim := newRedisLimiter(t, c, redislimit.TokenBucket(20, time.Second, 1), nil)
	const waiters = 16
	start := time.Now()
	errs := make(chan error, waiters)
	for i := 0; i < waiters; i++ {
		go func() { errs <- lim.Wait(ctx, "hot") }()
	}
	for i := 0; i < waiters; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	if took < (waiters-1)*50*time.Millisecond-10*time.Millisecond {
		t.Errorf("%d waiters got through in %v, faster than the rate allows", waiters, took)
	}
	_, cmds := counting.snapshot()
	if calls := cmds["EVALSHA"] + cmds["EVAL"]; calls > 3*waiters {
		t.Errorf("%d waiters made %d script calls, want at most %d", waiters, calls, 3*waiters)
	}
}

// When Redis fails, FailOpen admits and FailError and FailClosed return
// the error.
func TestWaitRedisDown(t *testing.T) {
	for _, tc := range []struct {
		policy redislimit.FailurePolicy
		ok     bool
	}{
		{redislimit.FailError, false},
		{redislimit.FailOpen, true},
		{redislimit.FailClosed, false},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			c := redistest.NewClient(t, closedAddr(t), func(o *redis.Options) { o.MaxRetries, o.DialerRetries = -1, 1 })
			lim, err := redislimit.New(c, redislimit.FixedWindow(5, time.Minute), redislimit.WithFailurePolicy(tc.policy))
			if err != nil {
				t.Fatal(err)
			}
			err = lim.Wait(context.Background(), "k")
			if (err == nil) != tc.ok {
				t.Errorf("Wait with Redis down = %v, want success %v", err, tc.ok)
			}
		})
	}
}
