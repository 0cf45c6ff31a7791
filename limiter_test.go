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
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// AllowMany decides as Allow would, key after key: its results match
// those of Allow calls on a twin limiter over the same sequence, with
// repeated keys, exhaustion and time passing, on every backend.
func TestAllowManyMatchesAllow(t *testing.T) {
	ctx := context.Background()
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		for _, ac := range algorithms() {
			t.Run(ac.name, func(t *testing.T) {
				clk := clock.NewFake(epoch)
				many, _ := b.newLimiter(t, ac.alg, clk, redislimit.WithPrefix(testPrefix(t)+"many:"))
				one, _ := b.newLimiter(t, ac.alg, clk, redislimit.WithPrefix(testPrefix(t)+"one:"))
				var keys []string
				for i := 0; i < 40; i++ {
					keys = append(keys, fmt.Sprint("user-", i%7)) // every key several times
				}
				for round, advance := range []time.Duration{0, time.Second, ac.period / 2, ac.period} {
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
