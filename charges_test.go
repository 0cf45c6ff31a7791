package redislimit_test

import (
	"context"
	"errors"
	"math"
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

// Debit and Refund among decisions: every Result field at each step, for
// every algorithm's charge tables, on every backend, with a fake clock.
func TestCharges(t *testing.T) {
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		for _, row := range algtest.Rows {
			for _, st := range row.Charges {
				t.Run(row.Name+st.Name, func(t *testing.T) {
					b.skipUnlessRuns(t, row)
					clk := clock.NewFake(epoch)
					lim, _ := b.newLimiter(t, st.Alg, clk)
					runOps(t, lim, clk, "user", st.Steps)
				})
			}
		}
	})
}

// Every row has charge tables, so that a new algorithm says what Debit
// and Refund do.
func TestChargesCoverEveryRow(t *testing.T) {
	for _, row := range algtest.Rows {
		if len(row.Charges) == 0 {
			t.Errorf("%s has no Charges", row.Name)
		}
	}
}

// callOp makes the call op with n on key of lim.
func callOp(ctx context.Context, lim *redislimit.Limiter, op algtest.Op, key string, n int) (redislimit.Result, error) {
	switch op {
	case algtest.OpPeek:
		return lim.Peek(ctx, key)
	case algtest.OpDebit:
		return lim.Debit(ctx, key, n)
	case algtest.OpRefund:
		return lim.Refund(ctx, key, n)
	}
	return lim.AllowN(ctx, key, n)
}

// runOps runs steps on key of lim, advancing clk.
func runOps(t *testing.T, lim *redislimit.Limiter, clk *clock.Fake, key string, steps []algtest.OpStep) {
	t.Helper()
	ctx := context.Background()
	var elapsed time.Duration
	for i, s := range steps {
		clk.Advance(s.Advance)
		elapsed += s.Advance
		got, err := callOp(ctx, lim, s.Op, key, s.N)
		if err != nil {
			t.Fatalf("step %d: %v(ctx, %q, %d) at +%v: %v", i, s.Op, key, s.N, elapsed, err)
		}
		if diff := cmp.Diff(s.Want, got); diff != "" {
			t.Errorf("step %d: %v(ctx, %q, %d) at +%v = %+v, want %+v (-want +got)\n%s", i, s.Op, key, s.N, elapsed, got, s.Want, diff)
		}
	}
}

// Bad input is refused with ErrInvalidCost or the key's error, and sends
// nothing to Redis.
func TestChargesBadInput(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim, c := newLimiter(t, b, redislimit.FixedWindow(5, time.Minute), clock.NewFake(epoch))
		for _, charge := range []struct {
			name string
			f    func(context.Context, string, int) (redislimit.Result, error)
		}{{"Debit", lim.Debit}, {"Refund", lim.Refund}} {
			for _, tc := range []struct {
				key  string
				n    int
				want error
			}{
				{"u", 0, redislimit.ErrInvalidCost},
				{"u", -1, redislimit.ErrInvalidCost},
				{"u", redislimit.MaxDebit + 1, redislimit.ErrInvalidCost},
				{"u", math.MaxInt, redislimit.ErrInvalidCost},
				{"", 1, redislimit.ErrEmptyKey},
			} {
				if _, err := charge.f(ctx, tc.key, tc.n); !errors.Is(err, tc.want) {
					t.Errorf("%s(%q, %d) = %v, want %v", charge.name, tc.key, tc.n, err, tc.want)
				}
			}
		}
		if n, err := c.DBSize(ctx).Result(); err != nil || n != 0 {
			t.Errorf("after bad input Redis holds %d keys (%v), want none", n, err)
		}
		var zero redislimit.Limiter
		if _, err := zero.Debit(ctx, "u", 1); !errors.Is(err, redislimit.ErrInvalidConfig) {
			t.Errorf("zero Limiter's Debit = %v, want ErrInvalidConfig", err)
		}
		done, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := lim.Refund(done, "u", 1); !errors.Is(err, context.Canceled) {
			t.Errorf("Refund with an ended context = %v, want context.Canceled", err)
		}
	})
}

// Debits past a very large limit stop at the bound: nothing overflows, the
// durations stay within MaxWindow, and the key keeps a TTL.
func TestDebitBound(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		for _, row := range algtest.Rows {
			t.Run(row.Name, func(t *testing.T) {
				alg := row.Large
				if row.Name == algtest.SlidingLog.Name {
					// Each debit logs up to limit entries, a million in
					// Large: seconds in redis-server, longer than any
					// timeout in miniredis. The bound is the same.
					alg = row.Tight
				}
				lim, c := newLimiter(t, b, alg, clock.NewFake(epoch))
				for range 3 {
					r, err := lim.Debit(ctx, "u", redislimit.MaxDebit)
					if err != nil {
						t.Fatal(err)
					}
					if r.Allowed || r.Remaining != 0 || r.RetryAfter <= 0 || r.RetryAfter > redislimit.MaxWindow || r.ResetAfter > redislimit.MaxWindow {
						t.Fatalf("Debit(MaxDebit) on %s = %+v, want a denial within MaxWindow", row.Name, r)
					}
				}
				keys, err := c.Keys(ctx, "*").Result()
				if err != nil || len(keys) == 0 {
					t.Fatalf("keys after Debit: %v, %v", keys, err)
				}
				for _, k := range keys {
					if ttl, err := c.PTTL(ctx, k).Result(); err != nil || ttl <= 0 {
						t.Errorf("key %q has TTL %v (%v), want one", k, ttl, err)
					}
				}
				// Refunds give everything back, and never more.
				for range 4 {
					if _, err := lim.Refund(ctx, "u", redislimit.MaxDebit); err != nil {
						t.Fatal(err)
					}
				}
				r, err := lim.Peek(ctx, "u")
				if err != nil || !r.Allowed || r.Remaining != alg.Limit() {
					t.Errorf("Peek after refunds = %+v, %v; want full capacity %d", r, err, alg.Limit())
				}
			})
		}
	})
}

// Debit and Refund follow the failure policy when Redis is down: the
// error, the policy's answer, or the in-process state charged; OnError
// hears of each failure, and the Observer of none (it counts decisions).
func TestChargesFailurePolicy(t *testing.T) {
	ctx := context.Background()
	down := redistest.NewClient(t, closedAddr(t), func(o *redis.Options) { o.MaxRetries, o.DialerRetries = -1, 1 })
	degraded := func(allowed bool, remaining int, retry, reset time.Duration) redislimit.Result {
		return redislimit.Result{Allowed: allowed, Limit: 10, Remaining: remaining, RetryAfter: retry, ResetAfter: reset, Degraded: true}
	}
	for _, tc := range []struct {
		policy        redislimit.FailurePolicy
		debit, refund redislimit.Result
	}{
		{redislimit.FailOpen, degraded(true, 10, 0, 0), degraded(true, 10, 0, 0)},
		{redislimit.FailClosed, degraded(false, 0, redislimit.BreakerCooldown, redislimit.BreakerCooldown), degraded(false, 0, redislimit.BreakerCooldown, redislimit.BreakerCooldown)},
		// In process: a debit of 12 against 10 denies; a refund of 5
		// leaves 7 used.
		{redislimit.FailLocal, degraded(false, 0, time.Minute, time.Minute), degraded(true, 3, 0, time.Minute)},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			var errs, observed atomic.Int64
			lim, err := redislimit.New(down, redislimit.FixedWindow(10, time.Minute),
				redislimit.WithFailurePolicy(tc.policy), redislimit.WithClock(clock.NewFake(epoch).Now),
				redislimit.WithOnError(func(context.Context, error) { errs.Add(1) }),
				redislimit.WithObserver(func(context.Context, redislimit.Observation) { observed.Add(1) }))
			if err != nil {
				t.Fatal(err)
			}
			r, err := lim.Debit(ctx, "u", 12)
			if err != nil || !cmp.Equal(r, tc.debit) {
				t.Errorf("Debit(12) = %+v, %v; want %+v", r, err, tc.debit)
			}
			r, err = lim.Refund(ctx, "u", 5)
			if err != nil || !cmp.Equal(r, tc.refund) {
				t.Errorf("Refund(5) = %+v, %v; want %+v", r, err, tc.refund)
			}
			if errs.Load() != 2 || observed.Load() != 0 {
				t.Errorf("OnError called %d times, Observer %d; want 2 and 0", errs.Load(), observed.Load())
			}
		})
	}
	lim, err := redislimit.New(down, redislimit.FixedWindow(10, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lim.Debit(ctx, "u", 1); err == nil {
		t.Error("Debit with FailError and Redis down returned no error")
	}
}

// A refund drops the deny cache's answer for the key: the next call goes
// to Redis, which now admits it.
func TestRefundClearsDenyCache(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim, _ := newLimiter(t, b, redislimit.FixedWindow(2, time.Minute), clock.NewFake(epoch), redislimit.WithDenyCache(100))
		for range 2 {
			if r, err := lim.Allow(ctx, "u"); err != nil || !r.Allowed {
				t.Fatalf("Allow = %+v, %v", r, err)
			}
		}
		if r, err := lim.Allow(ctx, "u"); err != nil || r.Allowed {
			t.Fatalf("third Allow = %+v, %v; want a denial", r, err)
		}
		if r, err := lim.Refund(ctx, "u", 1); err != nil || !r.Allowed || r.Remaining != 1 {
			t.Fatalf("Refund(1) = %+v, %v; want 1 remaining", r, err)
		}
		if r, err := lim.Allow(ctx, "u"); err != nil || !r.Allowed {
			t.Errorf("Allow after the refund = %+v, %v; want it admitted, not the cached denial", r, err)
		}
		// A debit's denial is what the deny cache then answers.
		if r, err := lim.Debit(ctx, "u", 5); err != nil || r.Allowed {
			t.Fatalf("Debit(5) = %+v, %v; want a denial", r, err)
		}
		if r, err := lim.Allow(ctx, "u"); err != nil || r.Allowed {
			t.Errorf("Allow after the debit = %+v, %v; want a denial", r, err)
		}
	})
}
