package redislimit_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// concurrencyBackends runs f as a subtest on miniredis, a real
// redis-server and a real three-master Redis Cluster.
func concurrencyBackends(t *testing.T, f func(t *testing.T, c redis.UniversalClient)) {
	t.Helper()
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) { f(t, b.Client(t)) })
	t.Run("redis-cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t, 3, 0)
		f(t, cl.Client())
	})
}

// newConcurrency returns a Concurrency on c with the running test's
// prefix, a long timeout and, when clk is not nil, a fake clock.
func newConcurrency(t *testing.T, c redis.Scripter, limit int, ttl time.Duration, clk *clock.Fake, opts ...redislimit.Option) *redislimit.Concurrency {
	t.Helper()
	opts = append([]redislimit.Option{redislimit.WithPrefix(testPrefix(t)), redislimit.WithTimeout(time.Minute)}, opts...)
	if clk != nil {
		opts = append(opts, redislimit.WithClock(clk.Now))
	}
	cc, err := redislimit.NewConcurrency(c, limit, ttl, opts...)
	if err != nil {
		t.Fatalf("NewConcurrency: %v", err)
	}
	return cc
}

// ccKey returns the Redis key of user key in the running test, as the
// package documentation states the layout.
func ccKey(t *testing.T, key string) string { return testPrefix(t) + "cc:{" + key + "}" }

// ccOp is what one step of a concurrency step table does.
type ccOp uint8

const (
	acquire ccOp = iota
	release
	extend
)

func (o ccOp) String() string { return [...]string{"Acquire", "Release", "Extend"}[o] }

// ccStep moves the clock by advance, then does op: Acquire, which must
// return want (and a lease exactly when want.Allowed); or Release or
// Extend of the lease that step lease's Acquire returned, which must
// return an error matching wantErr (nil: no error).
type ccStep struct {
	advance time.Duration
	op      ccOp
	lease   int
	want    redislimit.Result
	wantErr error
}

func runConcurrencySteps(t *testing.T, cc *redislimit.Concurrency, clk *clock.Fake, key string, steps []ccStep) {
	t.Helper()
	ctx := context.Background()
	leases := make([]*redislimit.Lease, len(steps))
	var elapsed time.Duration
	for i, s := range steps {
		clk.Advance(s.advance)
		elapsed += s.advance
		switch s.op {
		case acquire:
			l, got, err := cc.Acquire(ctx, key)
			if err != nil {
				t.Fatalf("step %d: Acquire(ctx, %q) at +%v: %v", i, key, elapsed, err)
			}
			if diff := cmp.Diff(s.want, got); diff != "" {
				t.Errorf("step %d: Acquire(ctx, %q) at +%v = %+v, want %+v (-want +got)\n%s", i, key, elapsed, got, s.want, diff)
			}
			if (l != nil) != got.Allowed {
				t.Errorf("step %d: Acquire at +%v returned lease %v with Allowed %v", i, elapsed, l, got.Allowed)
			}
			leases[i] = l
		case release, extend:
			l := leases[s.lease]
			if l == nil {
				t.Fatalf("step %d: step %d took no lease", i, s.lease)
			}
			var err error
			if s.op == release {
				err = l.Release(ctx)
			} else {
				err = l.Extend(ctx)
			}
			if !errors.Is(err, s.wantErr) || (err != nil) != (s.wantErr != nil) {
				t.Errorf("step %d: %v of lease %d at +%v = %v, want %v", i, s.op, s.lease, elapsed, err, s.wantErr)
			}
		}
	}
}

func TestConcurrency(t *testing.T) {
	ctx := context.Background()
	concurrencyBackends(t, func(t *testing.T, c redis.UniversalClient) {
		t.Run("Steps", func(t *testing.T) {
			clk := clock.NewFake(epoch)
			cc := newConcurrency(t, c, 2, 10*time.Second, clk)
			s := time.Second
			runConcurrencySteps(t, cc, clk, "k", []ccStep{
				0:  {op: acquire, want: allowed(2, 1, 10*s)},                  // expires at 10s
				1:  {advance: s, op: acquire, want: allowed(2, 0, 10*s)},      // at 1s, expires at 11s
				2:  {advance: s, op: acquire, want: denied(2, 0, 8*s, 9*s)},   // full at 2s: the first frees at 10s
				3:  {op: release, lease: 0},                                   // a slot frees at once
				4:  {op: acquire, want: allowed(2, 0, 10*s)},                  // expires at 12s
				5:  {op: release, lease: 0},                                   // again: nil, and frees nothing
				6:  {op: acquire, want: denied(2, 0, 9*s, 10*s)},              // both held still
				7:  {advance: 5 * s, op: extend, lease: 1},                    // at 7s: expires at 17s
				8:  {advance: 5 * s, op: acquire, want: allowed(2, 0, 10*s)},  // at 12s lease 4 expired; expires at 22s
				9:  {op: extend, lease: 4, wantErr: redislimit.ErrLeaseLost},  // expired: lost
				10: {op: acquire, want: denied(2, 0, 5*s, 10*s)},              // and its slot not taken back
				11: {advance: 5 * s, op: acquire, want: allowed(2, 0, 10*s)},  // at 17s lease 1 expired
				12: {op: release, lease: 8},                                   //
				13: {op: release, lease: 11},                                  //
				14: {op: acquire, want: allowed(2, 1, 10*s)},                  // empty again
				15: {advance: -3 * s, op: acquire, want: allowed(2, 0, 13*s)}, // the clock went back: expiries stay
				16: {op: acquire, want: denied(2, 0, 10*s, 13*s)},             // durations stay positive
			})
		})

		t.Run("ExpiryFreesCrashedHolder", func(t *testing.T) {
			clk := clock.NewFake(epoch)
			cc := newConcurrency(t, c, 1, time.Minute, clk)
			// The holder never releases: it crashed.
			if l, r, err := cc.Acquire(ctx, "k"); err != nil || !r.Allowed || l == nil {
				t.Fatalf("Acquire = %v, %+v, %v", l, r, err)
			}
			clk.Advance(time.Minute - time.Microsecond)
			if _, r, err := cc.Acquire(ctx, "k"); err != nil || r.Allowed || r.RetryAfter != time.Microsecond {
				t.Fatalf("Acquire 1µs before the expiry = %+v, %v; want denied for 1µs", r, err)
			}
			clk.Advance(time.Microsecond)
			if l, r, err := cc.Acquire(ctx, "k"); err != nil || !r.Allowed || l == nil {
				t.Fatalf("Acquire at the crashed holder's expiry = %+v, %v; want allowed", r, err)
			}
		})

		t.Run("TokensAreTheLeasesOwn", func(t *testing.T) {
			clk := clock.NewFake(epoch)
			cc := newConcurrency(t, c, 2, time.Minute, clk)
			a, _, err := cc.Acquire(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			b, _, err := cc.Acquire(ctx, "k")
			if err != nil || a == nil || b == nil {
				t.Fatalf("two Acquires: %v, %v, %v", a, b, err)
			}
			tokens, err := c.ZRange(ctx, ccKey(t, "k"), 0, -1).Result()
			if err != nil {
				t.Fatal(err)
			}
			hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
			if len(tokens) != 2 || tokens[0] == tokens[1] || !hex32.MatchString(tokens[0]) || !hex32.MatchString(tokens[1]) {
				t.Fatalf("tokens held = %q, want two distinct 128-bit hex tokens", tokens)
			}
			for range 3 {
				if err := a.Release(ctx); err != nil {
					t.Fatalf("Release: %v", err)
				}
			}
			left, err := c.ZRange(ctx, ccKey(t, "k"), 0, -1).Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(left) != 1 {
				t.Fatalf("after releasing one lease three times, %d held, want the other one", len(left))
			}
			if err := a.Extend(ctx); !errors.Is(err, redislimit.ErrLeaseLost) {
				t.Errorf("Extend after Release = %v, want ErrLeaseLost", err)
			}
			again, err := c.ZRange(ctx, ccKey(t, "k"), 0, -1).Result()
			if err != nil || !cmp.Equal(again, left) {
				t.Errorf("Extend of a released lease changed the leases held from %q to %q (%v)", left, again, err)
			}
			if err := b.Extend(ctx); err != nil {
				t.Errorf("Extend of the other lease: %v", err)
			}
			if err := b.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if n := keysUnder(t, c); n != 0 {
				t.Errorf("%d keys left after every lease was released", n)
			}
		})

		t.Run("KeyHasTTLAndSetIsBounded", func(t *testing.T) {
			clk := clock.NewFake(epoch)
			const limit = 3
			cc := newConcurrency(t, c, limit, time.Second, clk)
			check := func(when string) {
				t.Helper()
				n, err := c.ZCard(ctx, ccKey(t, "k")).Result()
				if err != nil {
					t.Fatal(err)
				}
				if n < 1 || n > limit {
					t.Fatalf("%s: ZCARD = %d, want 1 to %d", when, n, limit)
				}
				ttl, err := c.PTTL(ctx, ccKey(t, "k")).Result()
				if err != nil {
					t.Fatal(err)
				}
				// The last lease expires within a second; the key a margin later.
				if ttl <= 0 || ttl > time.Second+redislimit.TTLMargin {
					t.Fatalf("%s: PTTL = %v, want more than 0 and at most 1s + TTLMargin", when, ttl)
				}
			}
			for round := range 40 {
				for i := range limit + 2 {
					if _, _, err := cc.Acquire(ctx, "k"); err != nil {
						t.Fatal(err)
					}
					check(fmt.Sprintf("round %d, Acquire %d", round, i))
				}
				// Every holder crashed: only expiry frees the slots.
				clk.Advance(time.Second)
			}
			l, _, err := cc.Acquire(ctx, "k")
			if err != nil || l == nil {
				t.Fatalf("Acquire: %v, %v", l, err)
			}
			clk.Advance(time.Second / 2)
			if err := l.Extend(ctx); err != nil {
				t.Fatal(err)
			}
			check("after Extend")
		})

		t.Run("BadInputWritesNothing", func(t *testing.T) {
			cc := newConcurrency(t, c, 2, time.Minute, nil)
			if l, r, err := cc.Acquire(ctx, ""); !errors.Is(err, redislimit.ErrEmptyKey) || l != nil || r.Allowed {
				t.Errorf(`Acquire(ctx, "") = %v, %+v, %v; want ErrEmptyKey`, l, r, err)
			}
			long := strings.Repeat("x", redislimit.MaxKeyLen+1)
			if _, _, err := cc.Acquire(ctx, long); !errors.Is(err, redislimit.ErrKeyTooLong) {
				t.Errorf("Acquire with a key too long = %v, want ErrKeyTooLong", err)
			}
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if _, _, err := cc.Acquire(cctx, "k"); !errors.Is(err, context.Canceled) {
				t.Errorf("Acquire with a cancelled context = %v, want context.Canceled", err)
			}
			if n := keysUnder(t, c); n != 0 {
				t.Errorf("bad input wrote %d keys", n)
			}
		})
	})
}

// A nil Lease and the zero Concurrency fail cleanly, never panic.
func TestConcurrencyZeroValues(t *testing.T) {
	ctx := context.Background()
	var l *redislimit.Lease
	if err := l.Release(ctx); err != nil {
		t.Errorf("nil Lease: Release = %v, want nil", err)
	}
	if err := l.Extend(ctx); !errors.Is(err, redislimit.ErrLeaseLost) {
		t.Errorf("nil Lease: Extend = %v, want ErrLeaseLost", err)
	}
	var cc redislimit.Concurrency
	if _, _, err := cc.Acquire(ctx, "k"); !errors.Is(err, redislimit.ErrInvalidConfig) {
		t.Errorf("zero Concurrency: Acquire = %v, want ErrInvalidConfig", err)
	}
}

func TestNewConcurrencyValidates(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: closedAddr(t)})
	defer c.Close()
	tests := []struct {
		name  string
		limit int
		ttl   time.Duration
		opts  []redislimit.Option
	}{
		{"limit 0", 0, time.Second, nil},
		{"limit over 2^50", 1<<50 + 1, time.Second, nil},
		{"ttl under 1ms", 1, time.Millisecond - 1, nil},
		{"ttl over MaxWindow", 1, redislimit.MaxWindow + 1, nil},
		{"deny cache", 1, time.Second, []redislimit.Option{redislimit.WithDenyCache(10)}},
		{"shadow mode", 1, time.Second, []redislimit.Option{redislimit.WithShadowMode()}},
		{"bad policy", 1, time.Second, []redislimit.Option{redislimit.WithFailurePolicy(9)}},
		{"prefix with a brace", 1, time.Second, []redislimit.Option{redislimit.WithPrefix("a{")}},
		{"no local instances", 1, time.Second, []redislimit.Option{redislimit.WithLocalInstances(0)}},
		{"zero timeout", 1, time.Second, []redislimit.Option{redislimit.WithTimeout(0)}},
	}
	for _, tt := range tests {
		if _, err := redislimit.NewConcurrency(c, tt.limit, tt.ttl, tt.opts...); !errors.Is(err, redislimit.ErrInvalidConfig) {
			t.Errorf("%s: NewConcurrency = %v, want ErrInvalidConfig", tt.name, err)
		}
	}
	if _, err := redislimit.NewConcurrency(nil, 1, time.Second); !errors.Is(err, redislimit.ErrNilClient) {
		t.Errorf("nil client: %v, want ErrNilClient", err)
	}
	if _, err := redislimit.NewConcurrency((*redis.Client)(nil), 1, time.Second); !errors.Is(err, redislimit.ErrNilClient) {
		t.Errorf("nil *redis.Client: %v, want ErrNilClient", err)
	}
	cc, err := redislimit.NewConcurrency(c, 1<<50, redislimit.MaxWindow)
	if err != nil {
		t.Fatalf("the largest limit and ttl: %v", err)
	}
	if cc.TTL() != redislimit.MaxWindow {
		t.Errorf("TTL() = %v, want %v", cc.TTL(), redislimit.MaxWindow)
	}
}

// Many clients and goroutines racing for one key never hold more leases
// at once than the limit: counted by the test itself, raised after each
// successful Acquire and lowered before each Release, so its count is
// never above the number of leases really held.
func TestConcurrencyExactUnderContention(t *testing.T) {
	const (
		limit      = 5
		clients    = 4
		goroutines = 16
		rounds     = 25
	)
	run := func(t *testing.T, newClient func() redis.Scripter) {
		ctx := context.Background()
		var inFlight, most, admitted atomic.Int64
		var wg sync.WaitGroup
		for range clients {
			cc := newConcurrency(t, newClient(), limit, time.Minute, nil)
			for range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range rounds {
						l, r, err := cc.Acquire(ctx, "hot")
						if err != nil {
							t.Errorf("Acquire: %v", err)
							return
						}
						if !r.Allowed {
							continue
						}
						admitted.Add(1)
						n := inFlight.Add(1)
						for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
						}
						// Hold the slot while others try for it: the
						// work a lease guards.
						time.Sleep(time.Millisecond)
						inFlight.Add(-1)
						if err := l.Release(ctx); err != nil {
							t.Errorf("Release: %v", err)
							return
						}
					}
				}()
			}
		}
		wg.Wait()
		if m := most.Load(); m > limit {
			t.Errorf("%d leases held at once, limit %d", m, limit)
		}
		if admitted.Load() == 0 {
			t.Error("no Acquire was allowed")
		}
		t.Logf("%d of %d Acquires allowed, at most %d held at once", admitted.Load(), clients*goroutines*rounds, most.Load())
	}
	t.Run("redis-server", func(t *testing.T) {
		s := redistest.Start(t)
		run(t, func() redis.Scripter { return s.Client() })
		if n := keysUnder(t, s.Client()); n != 0 {
			t.Errorf("%d keys left after every lease was released", n)
		}
	})
	t.Run("redis-cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t, 3, 0)
		run(t, func() redis.Scripter { return cl.Client() })
		if n := keysUnder(t, cl.Client()); n != 0 {
			t.Errorf("%d keys left after every lease was released", n)
		}
	})
}

func TestConcurrencyFailurePolicies(t *testing.T) {
	ctx := context.Background()
	down := redistest.NewClient(t, closedAddr(t), func(o *redis.Options) { o.MaxRetries, o.DialerRetries = -1, 1 })
	cooldown := redislimit.BreakerCooldown
	tests := []struct {
		policy    redislimit.FailurePolicy
		want      redislimit.Result
		lease     bool
		extendErr bool
	}{
		{redislimit.FailError, redislimit.Result{}, false, false},
		{redislimit.FailOpen, redislimit.Result{Allowed: true, Limit: 4, Remaining: 4, Degraded: true}, true, false},
		{redislimit.FailClosed, redislimit.Result{Limit: 4, RetryAfter: cooldown, ResetAfter: cooldown, Degraded: true}, false, false},
		// 4 over 2 instances: 2 locally.
		{redislimit.FailLocal, redislimit.Result{Allowed: true, Limit: 2, Remaining: 1, ResetAfter: time.Minute, Degraded: true}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.policy.String(), func(t *testing.T) {
			var log errLog
			clk := clock.NewFake(epoch)
			cc := newConcurrency(t, down, 4, time.Minute, clk, redislimit.WithFailurePolicy(tt.policy),
				redislimit.WithLocalInstances(2), redislimit.WithOnError(log.onError))
			l, got, err := cc.Acquire(ctx, "k")
			if (err != nil) != (tt.policy == redislimit.FailError) {
				t.Fatalf("Acquire with Redis down: error %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Acquire with Redis down (-want +got):\n%s", diff)
			}
			if (l != nil) != tt.lease {
				t.Fatalf("Acquire with Redis down returned lease %v", l)
			}
			if log.count() != 1 {
				t.Errorf("OnError called %d times for one failed Acquire, want 1", log.count())
			}
			if l != nil {
				if err := l.Extend(ctx); err != nil {
					t.Errorf("Extend of a %v lease: %v", tt.policy, err)
				}
				if err := l.Release(ctx); err != nil {
					t.Errorf("Release of a %v lease: %v", tt.policy, err)
				}
				if log.count() != 1 {
					t.Errorf("a lease held without Redis called OnError on Extend or Release")
				}
			}
		})
	}
}

// FailLocal holds leases in process memory with the Redis semantics:
// the divided limit, expiry, idempotent release, lost leases.
func TestConcurrencyFailLocal(t *testing.T) {
	ctx := context.Background()
	down := redistest.NewClient(t, closedAddr(t), func(o *redis.Options) { o.MaxRetries, o.DialerRetries = -1, 1 })
	clk := clock.NewFake(epoch)
	cc := newConcurrency(t, down, 6, 10*time.Second, clk, redislimit.WithFailurePolicy(redislimit.FailLocal), redislimit.WithLocalInstances(3))
	s := time.Second
	degraded := func(r redislimit.Result) redislimit.Result { r.Degraded = true; return r }
	runConcurrencySteps(t, cc, clk, "k", []ccStep{
		0: {op: acquire, want: degraded(allowed(2, 1, 10*s))},
		1: {advance: s, op: acquire, want: degraded(allowed(2, 0, 10*s))},
		2: {advance: s, op: acquire, want: degraded(denied(2, 0, 8*s, 9*s))},
		3: {op: release, lease: 0},
		4: {op: release, lease: 0},
		5: {op: acquire, want: degraded(allowed(2, 0, 10*s))},
		6: {advance: 5 * s, op: extend, lease: 1},
		7: {advance: 5 * s, op: extend, lease: 5, wantErr: redislimit.ErrLeaseLost},
		8: {op: acquire, want: degraded(allowed(2, 0, 10*s))},
		9: {op: acquire, want: degraded(denied(2, 0, 5*s, 10*s))},
	})
	// Another key has slots of its own.
	if _, r, err := cc.Acquire(ctx, "other"); err != nil || !r.Allowed {
		t.Errorf("Acquire on another key = %+v, %v", r, err)
	}
}

// With Redis down, a lease taken from Redis cannot be released: Release
// returns the error after passing it to OnError, and the slot frees at
// the lease's expiry.
func TestConcurrencyReleaseWithRedisDown(t *testing.T) {
	ctx := context.Background()
	for _, policy := range []redislimit.FailurePolicy{redislimit.FailError, redislimit.FailOpen, redislimit.FailLocal} {
		t.Run(policy.String(), func(t *testing.T) {
			s := redistest.Start(t)
			var log errLog
			cc := newConcurrency(t, s.Client(func(o *redis.Options) { o.MaxRetries = -1 }), 2, time.Minute, nil,
				redislimit.WithFailurePolicy(policy), redislimit.WithOnError(log.onError))
			l, r, err := cc.Acquire(ctx, "k")
			if err != nil || !r.Allowed || r.Degraded {
				t.Fatalf("Acquire = %+v, %v", r, err)
			}
			s.Stop()
			err = l.Release(ctx)
			if err == nil {
				t.Fatal("Release with Redis down: nil error")
			}
			if log.count() != 1 || log.last() != err {
				t.Errorf("OnError got %d errors (last %v), Release returned %v", log.count(), log.last(), err)
			}
			err = l.Extend(ctx)
			if wantNil := policy == redislimit.FailOpen; (err == nil) != wantNil {
				t.Errorf("Extend with Redis down under %v = %v", policy, err)
			}
			if errors.Is(err, redislimit.ErrLeaseLost) {
				t.Errorf("Extend with Redis down = %v: the lease is not known to be lost", err)
			}
			if log.count() != 2 {
				t.Errorf("OnError called %d times for two failed calls", log.count())
			}
		})
	}
}

// An Acquire is one round trip, and so is a Release; each reports one
// decision to the observer (Acquire only).
func TestConcurrencyRoundTripsAndObserver(t *testing.T) {
	ctx := context.Background()
	c, counting := countedServer(t)
	var obs []redislimit.Observation
	var mu sync.Mutex
	cc := newConcurrency(t, c, 1, time.Minute, nil, redislimit.WithObserver(func(_ context.Context, o redislimit.Observation) {
		mu.Lock()
		obs = append(obs, o)
		mu.Unlock()
	}))
	// The first call loads the script.
	l, _, err := cc.Acquire(ctx, "warm")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	counting.reset()
	l, _, err = cc.Acquire(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if rt, _ := counting.snapshot(); rt != 1 {
		t.Errorf("Acquire took %d round trips, want 1", rt)
	}
	if _, r, err := cc.Acquire(ctx, "k"); err != nil || r.Allowed {
		t.Fatalf("second Acquire = %+v, %v; want denied", r, err)
	}
	counting.reset()
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if rt, _ := counting.snapshot(); rt != 1 {
		t.Errorf("Release took %d round trips, want 1", rt)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []redislimit.Outcome{redislimit.Allowed, redislimit.Allowed, redislimit.Denied}
	if len(obs) != len(want) {
		t.Fatalf("observer saw %d decisions, want %d", len(obs), len(want))
	}
	for i, o := range obs {
		if o.Outcome != want[i] || o.Algorithm != "cc" || o.RoundTrips != 1 {
			t.Errorf("observation %d = %+v, want %v of cc in 1 round trip", i, o, want[i])
		}
	}
}

// BenchmarkConcurrencyAcquireRelease measures one Acquire and one Release
// on redis-server: round trips per pair, and the Redis-side µs of each.
func BenchmarkConcurrencyAcquireRelease(b *testing.B) {
	s := redistest.Start(b)
	c := s.Client()
	counting := &counter{}
	c.AddHook(counting)
	cc, err := redislimit.NewConcurrency(c, 1, time.Minute, redislimit.WithPrefix("bench:"))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if l, _, err := cc.Acquire(ctx, "warm"); err != nil || l.Release(ctx) != nil {
		b.Fatal(err)
	}
	counting.reset()
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		l, r, err := cc.Acquire(ctx, "k")
		if err != nil || !r.Allowed {
			b.Fatalf("Acquire = %+v, %v", r, err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	rt, _ := counting.snapshot()
	b.ReportMetric(float64(rt)/float64(b.N), "roundtrips/op")
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if strings.HasPrefix(line, "cmdstat_evalsha:") {
			b.Log(strings.TrimSpace(line))
		}
	}
}

// A key whose limit was lowered below the leases it holds frees a slot only
// when enough of them have ended: RetryAfter must not point at a moment when
// an Acquire is still denied.
func TestConcurrencyRetryAfterWithLimitLowered(t *testing.T) {
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
