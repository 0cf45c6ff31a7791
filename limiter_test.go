package redislimit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// AllowMany decides as Allow would, key after key: its results match
// those of Allow calls on a twin limiter over the same sequence, with
// repeated keys, exhaustion and time passing, on every backend.
func TestAllowManyMatchesAllow(t *testing.T) {
	ctx := context.Background()
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		for _, row := range algtest.Rows {
			t.Run(row.Name, func(t *testing.T) {
				b.skipUnlessRuns(t, row)
				clk := clock.NewFake(epoch)
				many, _ := b.newLimiter(t, row.Small, clk, redislimit.WithPrefix(testPrefix(t)+"many:"))
				one, _ := b.newLimiter(t, row.Small, clk, redislimit.WithPrefix(testPrefix(t)+"one:"))
				var keys []string
				for i := 0; i < 40; i++ {
					keys = append(keys, fmt.Sprint("user-", i%7)) // every key several times
				}
				for round, advance := range []time.Duration{0, time.Second, row.Refill / 2, row.Refill} {
					clk.Advance(advance)
					got, err := many.AllowMany(ctx, keys)
					if err != nil {
						t.Fatalf("round %d: AllowMany: %v", round, err)
					}
					want := make([]redislimit.Result, len(keys))
					for i, k := range keys {
						if want[i], err = one.Allow(ctx, k); err != nil {
							t.Fatal(err)
						}
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("round %d: AllowMany differs from Allow one by one (-Allow +AllowMany):\n%s", round, diff)
					}
				}
			})
		}
	})
}

// AllowMany sends its keys in one round trip on one node (once its
// connection is open), and recovers from a flushed script cache without
// an error.
func TestAllowManyOneRoundTrip(t *testing.T) {
	ctx := context.Background()
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		for _, ctxTimeout := range []bool{false, true} {
			t.Run(fmt.Sprint("ContextTimeoutEnabled=", ctxTimeout), func(t *testing.T) {
				c := b.Client(t, func(o *redis.Options) { o.ContextTimeoutEnabled = ctxTimeout })
				counting := &counter{}
				c.AddHook(counting)
				lim := newRedisLimiter(t, c, redislimit.TokenBucket(10, time.Hour, 10), nil)
				if _, err := lim.AllowMany(ctx, []string{"warm"}); err != nil { // dials and loads the script
					t.Fatal(err)
				}
				keys := make([]string, 1000)
				for i := range keys {
					keys[i] = fmt.Sprint("k", i)
				}
				counting.reset()
				res, err := lim.AllowMany(ctx, keys)
				if err != nil {
					t.Fatal(err)
				}
				if rt, cmds := counting.snapshot(); rt != 1 || cmds["EVALSHA"] != len(keys) {
					t.Errorf("AllowMany of %d keys: %d round trips, commands %v; want 1 round trip of EVALSHAs", len(keys), rt, cmds)
				}
				for i, r := range res {
					if !r.Allowed || r.Remaining != 9 {
						t.Fatalf("result %d = %+v, want allowed with 9 left", i, r)
					}
				}
				flushScripts(t, c)
				res, err = lim.AllowMany(ctx, keys[:10])
				if err != nil {
					t.Fatalf("AllowMany after SCRIPT FLUSH: %v", err)
				}
				if len(res) != 10 || !res[9].Allowed || res[9].Remaining != 8 {
					t.Errorf("AllowMany after SCRIPT FLUSH = %+v", res)
				}
			})
		}
	})
}

// Bad keys are refused before anything is sent; no keys, no results.
func TestAllowManyBadInput(t *testing.T) {
	ctx := context.Background()
	c, counting := countedServer(t)
	lim := newRedisLimiter(t, c, redislimit.FixedWindow(5, time.Minute), nil)
	for _, tc := range []struct {
		keys []string
		want error
	}{
		{[]string{"a", "", "b"}, redislimit.ErrEmptyKey},
		{[]string{"a", strings.Repeat("x", redislimit.MaxKeyLen+1)}, redislimit.ErrKeyTooLong},
	} {
		res, err := lim.AllowMany(ctx, tc.keys)
		if !errors.Is(err, tc.want) || res != nil {
			t.Errorf("AllowMany with a bad key = %v, %v; want nil, %v", res, err, tc.want)
		}
	}
	for _, keys := range [][]string{nil, {}} {
		if res, err := lim.AllowMany(ctx, keys); err != nil || len(res) != 0 {
			t.Errorf("AllowMany(%#v) = %v, %v; want no results, no error", keys, res, err)
		}
	}
	if rt, _ := counting.snapshot(); rt != 0 {
		t.Errorf("bad input cost %d round trips", rt)
	}
	if n := keysUnder(t, c); n != 0 {
		t.Errorf("bad input wrote %d keys", n)
	}
}

// When Redis is down, each key is decided by the failure policy, as Allow
// would, and OnError hears of the failure once.
func TestAllowManyRedisDown(t *testing.T) {
	ctx := context.Background()
	keys := []string{"a", "b", "a"}
	for _, tc := range []struct {
		policy  redislimit.FailurePolicy
		allowed bool
	}{
		{redislimit.FailError, false},
		{redislimit.FailOpen, true},
		{redislimit.FailClosed, false},
		{redislimit.FailLocal, true},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			c := redistest.NewClient(t, closedAddr(t), func(o *redis.Options) { o.MaxRetries, o.DialerRetries = -1, 1 })
			var log errLog
			lim, err := redislimit.New(c, redislimit.FixedWindow(5, time.Minute),
				redislimit.WithFailurePolicy(tc.policy), redislimit.WithOnError(log.onError))
			if err != nil {
				t.Fatal(err)
			}
			res, err := lim.AllowMany(ctx, keys)
			if tc.policy == redislimit.FailError {
				if err == nil || res != nil {
					t.Errorf("AllowMany with Redis down = %v, %v; want no results and an error", res, err)
				}
			} else {
				if err != nil || len(res) != len(keys) {
					t.Fatalf("AllowMany with Redis down = %v, %v; want %d degraded results", res, err, len(keys))
				}
				for i, r := range res {
					if !r.Degraded || r.Allowed != tc.allowed {
						t.Errorf("result %d = %+v, want degraded, allowed %v", i, r, tc.allowed)
					}
				}
			}
			if n := log.count(); n != 1 {
				t.Errorf("OnError called %d times, want once", n)
			}
		})
	}
}

// AllowMany answers the keys the deny cache holds without Redis.
func TestAllowManyDenyCache(t *testing.T) {
	ctx := context.Background()
	c, counting := countedServer(t)
	// Room for both keys whatever shard of the cache they land in.
	lim := newRedisLimiter(t, c, redislimit.FixedWindow(1, time.Hour), nil, redislimit.WithDenyCache(1000))
	if _, err := lim.AllowMany(ctx, []string{"a", "a", "b", "b"}); err != nil {
		t.Fatal(err)
	}
	counting.reset()
	res, err := lim.AllowMany(ctx, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if rt, _ := counting.snapshot(); rt != 0 || res[0].Allowed || res[1].Allowed || res[0].RetryAfter <= 0 {
		t.Errorf("AllowMany on denied keys = %+v in %d round trips, want cached denials", res, rt)
	}
}

// A Limiter that New did not build says so from every method, instead of
// deciding or panicking.
func TestZeroLimiter(t *testing.T) {
	ctx := context.Background()
	var l redislimit.Limiter
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, redislimit.ErrInvalidConfig) || !strings.Contains(err.Error(), "New") {
			t.Errorf("%s on the zero Limiter: %v, want ErrInvalidConfig saying it was not built with New", what, err)
		}
	}
	_, err := l.Allow(ctx, "k")
	check("Allow", err)
	_, err = l.AllowN(ctx, "k", 3)
	check("AllowN", err)
	_, err = l.Peek(ctx, "k")
	check("Peek", err)
	check("Reset", l.Reset(ctx, "k"))
	_, err = l.AllowMany(ctx, []string{"k"})
	check("AllowMany", err)
	check("Wait", l.Wait(ctx, "k"))
	if q := l.Quotas(); len(q) != 0 {
		t.Errorf("Quotas of the zero Limiter = %v, want none", q)
	}
}

// Errors name the algorithm as its constructor does and carry the values
// that made them.
func TestErrorsNameTheAlgorithmAndValues(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	lim, err := redislimit.New(c, redislimit.TokenBucket(20, time.Second, 20))
	if err != nil {
		t.Fatal(err)
	}
	_, err = lim.AllowN(context.Background(), "k", 21)
	if !errors.Is(err, redislimit.ErrCostExceedsLimit) {
		t.Fatalf("AllowN(21) = %v, want ErrCostExceedsLimit", err)
	}
	for _, want := range []string{"TokenBucket", "21", "20"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("AllowN(21) error %q does not contain %q", err, want)
		}
	}
	tests := []struct {
		alg  redislimit.Algorithm
		want []string
	}{
		{redislimit.FixedWindow(0, time.Minute), []string{"FixedWindow", "limit", "0"}},
		{redislimit.SlidingLog(5, time.Microsecond), []string{"SlidingLog", "window", "1µs"}},
		{redislimit.SlidingWindow(-1, time.Minute), []string{"SlidingWindow", "-1"}},
		{redislimit.TokenBucket(1, time.Second, 0), []string{"TokenBucket", "burst", "0"}},
		{redislimit.All(redislimit.FixedWindow(1, time.Minute), redislimit.TokenBucket(0, time.Second, 1)), []string{"All", "part 1", "TokenBucket", "rate"}},
	}
	for _, tt := range tests {
		_, err := redislimit.New(c, tt.alg)
		if !errors.Is(err, redislimit.ErrInvalidConfig) {
			t.Errorf("New(%v) = %v, want ErrInvalidConfig", tt.want[0], err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("New(%s) error %q does not contain %q", tt.want[0], err, w)
			}
		}
	}
}
