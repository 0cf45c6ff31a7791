package redislimit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// TestConformance runs every algorithm through the behaviour every
// algorithm must have, on miniredis, on a real redis-server and in process
// memory ([redislimit.NewLocal]).
func TestConformance(t *testing.T) {
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		for _, row := range algtest.Rows {
			t.Run(row.Name, func(t *testing.T) {
				b.skipUnlessRuns(t, row)
				conformance(t, b, row)
			})
		}
	})
}

// conformance runs row's Small configuration, of capacity 5, through the
// suite on b.
func conformance(t *testing.T, b limiterBackend, row algtest.Row) {
	ctx := context.Background()
	const capacity = 5

	t.Run("FreshKeyIsFull", func(t *testing.T) {
		clk := clock.NewFake(epoch)
		lim, c := b.newLimiter(t, row.Small, clk)
		got, err := lim.Peek(ctx, "fresh")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(allowed(capacity, capacity, 0), got, ignoreParts); diff != "" {
			t.Errorf("Peek on a fresh key (-want +got):\n%s", diff)
		}
		if c != nil {
			if n := keysUnder(t, c); n != 0 {
				t.Errorf("Peek on a fresh key wrote %d keys", n)
			}
		}
	})

	t.Run("ExhaustThenDenyWithoutConsuming", func(t *testing.T) {
		clk := clock.NewFake(epoch)
		lim, _ := b.newLimiter(t, row.Small, clk)
		for i := 1; i <= capacity; i++ {
			r, err := lim.Allow(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if !r.Allowed || r.Remaining != capacity-i || r.RetryAfter != 0 || r.Limit != capacity {
				t.Fatalf("Allow #%d = %+v, want allowed with %d remaining", i, r, capacity-i)
			}
			if r.ResetAfter <= 0 || r.ResetAfter > row.Refill {
				t.Fatalf("Allow #%d: ResetAfter = %v, want in (0, %v]", i, r.ResetAfter, row.Refill)
			}
		}
		first, err := lim.Allow(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if first.Allowed || first.Remaining != 0 || first.RetryAfter <= 0 || first.RetryAfter > row.Refill {
			t.Fatalf("Allow past the limit = %+v, want denied, 0 remaining, RetryAfter in (0, %v]", first, row.Refill)
		}
		// Denied calls must not move anything.
		for i := 0; i < 20; i++ {
			r, err := lim.Allow(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(first, r); diff != "" {
				t.Fatalf("denied call #%d changed the state (-first +now):\n%s", i, diff)
			}
		}
		// Just before RetryAfter, still denied; at RetryAfter, allowed.
		clk.Advance(first.RetryAfter - time.Millisecond)
		if r, _ := lim.Allow(ctx, "k"); r.Allowed {
			t.Fatalf("allowed %v before RetryAfter: %+v", time.Millisecond, r)
		}
		clk.Advance(time.Millisecond)
		if r, err := lim.Allow(ctx, "k"); err != nil || !r.Allowed {
			t.Fatalf("Allow at RetryAfter = %+v, %v; want allowed", r, err)
		}
	})

	t.Run("AllowNIsAllOrNothing", func(t *testing.T) {
		clk := clock.NewFake(epoch)
		lim, _ := b.newLimiter(t, row.Small, clk)
		if r, err := lim.AllowN(ctx, "k", 3); err != nil || !r.Allowed || r.Remaining != 2 {
			t.Fatalf("AllowN(3) = %+v, %v; want allowed, 2 remaining", r, err)
		}
		r, err := lim.AllowN(ctx, "k", 3)
		if err != nil || r.Allowed || r.Remaining != 2 {
			t.Fatalf("AllowN(3) with 2 left = %+v, %v; want denied, 2 remaining", r, err)
		}
		if r, err := lim.AllowN(ctx, "k", 2); err != nil || !r.Allowed || r.Remaining != 0 {
			t.Fatalf("AllowN(2) with 2 left = %+v, %v; want allowed, 0 remaining", r, err)
		}
	})

	t.Run("CostAboveCapacityWritesNothing", func(t *testing.T) {
		clk := clock.NewFake(epoch)
		lim, c := b.newLimiter(t, row.Small, clk)
		for _, n := range []int{capacity + 1, 1 << 40} {
			if _, err := lim.AllowN(ctx, "k", n); !errors.Is(err, redislimit.ErrCostExceedsLimit) {
				t.Errorf("AllowN(%d) error = %v, want ErrCostExceedsLimit", n, err)
			}
		}
		if c != nil {
			if n := keysUnder(t, c); n != 0 {
				t.Errorf("refused cost wrote %d keys", n)
			}
		}
	})

	t.Run("BadInputWritesNothing", func(t *testing.T) {
		clk := clock.NewFake(epoch)
		counting := &counter{}
		lim, c := b.newLimiter(t, row.Small, clk)
		if c != nil {
			c.AddHook(counting)
		}
		long := strings.Repeat("x", redislimit.MaxKeyLen+1)
		for _, tc := range []struct {
			key  string
			n    int
			want error
		}{
			{"", 1, redislimit.ErrEmptyKey},
			{long, 1, redislimit.ErrKeyTooLong},
			// Not "k": a key that no error text can hold by chance, as
			// "TokenBucket" holds "k".
			{"user-key", 0, redislimit.ErrInvalidCost},
			{"user-key", -1, redislimit.ErrInvalidCost},
			{"user-key", capacity + 1, redislimit.ErrCostExceedsLimit},
		} {
			r, err := lim.AllowN(ctx, tc.key, tc.n)
			if !errors.Is(err, tc.want) {
				t.Errorf("AllowN(ctx, key of %d bytes, %d) error = %v, want %v", len(tc.key), tc.n, err, tc.want)
			}
			if !cmp.Equal(r, redislimit.Result{}) {
				t.Errorf("AllowN with bad input returned %+v alongside its error, want the zero Result", r)
			}
			if err != nil && tc.key != "" && strings.Contains(err.Error(), tc.key) {
				t.Errorf("error %q contains the key", err)
			}
		}
		if _, err := lim.Peek(ctx, ""); !errors.Is(err, redislimit.ErrEmptyKey) {
			t.Errorf("Peek(\"\") error = %v, want ErrEmptyKey", err)
		}
		if err := lim.Reset(ctx, ""); !errors.Is(err, redislimit.ErrEmptyKey) {
			t.Errorf("Reset(\"\") error = %v, want ErrEmptyKey", err)
		}
		if c != nil {
			if rt, _ := counting.snapshot(); rt != 0 {
				t.Errorf("bad input sent %d commands to Redis", rt)
			}
			if n := keysUnder(t, c); n != 0 {
				t.Errorf("bad input wrote %d keys", n)
			}
		}
	})

	t.Run("Reset", func(t *testing.T) {
		clk := clock.NewFake(epoch)
		lim, c := b.newLimiter(t, row.Small, clk)
		if _, err := lim.AllowN(ctx, "k", capacity); err != nil {
			t.Fatal(err)
		}
		if err := lim.Reset(ctx, "k"); err != nil {
			t.Fatalf("Reset: %v", err)
		}
		if c != nil {
			if n := keysUnder(t, c); n != 0 {
				t.Errorf("after Reset, %d keys remain", n)
			}
		}
		r, err := lim.Peek(ctx, "k")
		if err != nil || r.Remaining != capacity || r.ResetAfter != 0 {
			t.Errorf("Peek after Reset = %+v, %v; want full", r, err)
		}
		if err := lim.Reset(ctx, "never-used"); err != nil {
			t.Errorf("Reset of a key with no state: %v", err)
		}
	})

	t.Run("FullAgainAfterPeriod", func(t *testing.T) {
		clk := clock.NewFake(epoch)
		lim, c := b.newLimiter(t, row.Small, clk)
		r, err := lim.AllowN(ctx, "k", capacity)
		if err != nil || !r.Allowed {
			t.Fatalf("AllowN(capacity) = %+v, %v", r, err)
		}
		if r.ResetAfter != row.Refill {
			t.Errorf("ResetAfter after taking everything = %v, want %v", r.ResetAfter, row.Refill)
		}
		clk.Advance(r.ResetAfter)
		p, err := lim.Peek(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(allowed(capacity, capacity, 0), p, ignoreParts); diff != "" {
			t.Errorf("Peek after ResetAfter (-want +got):\n%s", diff)
		}
		_ = c
	})

	t.Run("EveryKeyHasTTL", func(t *testing.T) {
		b.needRedis(t, "TTLs are Redis's")
		clk := clock.NewFake(epoch)
		lim, c := b.newLimiter(t, row.Small, clk)
		for i := 0; i < capacity+2; i++ { // allowed and denied calls
			if _, err := lim.Allow(ctx, "k"); err != nil {
				t.Fatal(err)
			}
			assertTTL(t, c, redislimit.RedisKey(lim, "k"), row.Refill)
		}
	})

	t.Run("KeyWithoutTTLGetsOne", func(t *testing.T) {
		b.needRedis(t, "TTLs are Redis's")
		for _, calls := range []int{1, capacity} { // then one allowed, or one denied call
			clk := clock.NewFake(epoch)
			lim, c := b.newLimiter(t, row.Small, clk)
			rk := redislimit.RedisKey(lim, "k")
			if _, err := lim.AllowN(ctx, "k", calls); err != nil {
				t.Fatal(err)
			}
			if err := c.Persist(ctx, rk).Err(); err != nil {
				t.Fatal(err)
			}
			for _, f := range []func() (redislimit.Result, error){
				func() (redislimit.Result, error) { return lim.Peek(ctx, "k") },
				func() (redislimit.Result, error) { return lim.Allow(ctx, "k") },
			} {
				if err := c.Persist(ctx, rk).Err(); err != nil {
					t.Fatal(err)
				}
				if _, err := f(); err != nil {
					t.Fatal(err)
				}
				assertTTL(t, c, rk, row.Refill)
			}
		}
	})

	t.Run("TimeGoingBackwards", func(t *testing.T) {
		clk := clock.NewFake(epoch)
		lim, _ := b.newLimiter(t, row.Small, clk)
		clk.Advance(row.Refill / 2)
		if r, err := lim.AllowN(ctx, "k", capacity); err != nil || !r.Allowed {
			t.Fatalf("AllowN(capacity) = %+v, %v", r, err)
		}
		for _, back := range []time.Duration{time.Millisecond, time.Second, row.Refill / 2, 24 * time.Hour} {
			clk.Set(epoch.Add(row.Refill / 2).Add(-back))
			for _, f := range []func() (redislimit.Result, error){
				func() (redislimit.Result, error) { return lim.Peek(ctx, "k") },
				func() (redislimit.Result, error) { return lim.Allow(ctx, "k") },
			} {
				r, err := f()
				if err != nil {
					t.Fatalf("clock %v back: %v", back, err)
				}
				if r.Allowed || r.Remaining != 0 {
					t.Errorf("clock %v back: %+v, want denied with nothing remaining (no refill)", back, r)
				}
				if r.RetryAfter <= 0 || r.RetryAfter > row.Refill || r.ResetAfter < 0 || r.ResetAfter > row.Refill {
					t.Errorf("clock %v back: durations %+v outside (0, %v]", back, r, row.Refill)
				}
			}
		}
		// From the earliest time seen, a full period later the key is full.
		clk.Set(epoch.Add(row.Refill/2 - 24*time.Hour + row.Refill))
		if r, err := lim.Allow(ctx, "k"); err != nil || !r.Allowed {
			t.Errorf("a period after the clock stepped back: %+v, %v; want allowed", r, err)
		}
	})

	t.Run("AlgorithmsOnOneUserKeyDoNotCollide", func(t *testing.T) {
		c := b.needRedis(t, "in-process limiters never share state")
		want := 0
		for _, other := range algtest.Rows {
			lim, err := redislimit.New(c, other.Small, redislimit.WithPrefix(testPrefix(t)))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := lim.Allow(ctx, "shared"); err != nil {
				t.Fatalf("%s on a key used by others: %v", other.Name, err)
			}
			want += max(1, len(redislimit.RedisKeys(lim, "shared"))) // All: a key per part
		}
		if n := keysUnder(t, c); n != want {
			t.Errorf("%d keys for %d algorithms on one user key, want %d", n, len(algtest.Rows), want)
		}
	})

	t.Run("KeysAreIndependentAndBinarySafe", func(t *testing.T) {
		clk := clock.NewFake(epoch)
		lim, _ := b.newLimiter(t, row.Small, clk)
		bin := make([]byte, 4096)
		for i := range bin {
			bin[i] = byte(i)
		}
		keys := []string{"a", "b", "{a}", "a}", "}{", "rl:fw:{a}", "ünï😀", string(bin), strings.Repeat("k", redislimit.MaxKeyLen)}
		for _, k := range keys {
			if r, err := lim.AllowN(ctx, k, capacity); err != nil || !r.Allowed {
				t.Fatalf("AllowN(key of %d bytes) = %+v, %v; want allowed", len(k), r, err)
			}
		}
		for _, k := range keys {
			r, err := lim.Peek(ctx, k)
			if err != nil || r.Allowed {
				t.Fatalf("Peek(key of %d bytes) = %+v, %v; want denied (its own state only)", len(k), r, err)
			}
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		lim, _ := b.newLimiter(t, row.Small, nil)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := lim.Allow(cctx, "k"); !errors.Is(err, context.Canceled) {
			t.Errorf("Allow with a cancelled context: %v, want context.Canceled", err)
		}
		if err := lim.Reset(cctx, "k"); !errors.Is(err, context.Canceled) {
			t.Errorf("Reset with a cancelled context: %v, want context.Canceled", err)
		}
	})

	t.Run("OneRoundTripPerDecision", func(t *testing.T) {
		counting := &counter{}
		c := b.needRedis(t, "no round trips to count")
		c.AddHook(counting)
		lim, err := redislimit.New(c, row.Small, redislimit.WithPrefix(testPrefix(t)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lim.Allow(ctx, "warm"); err != nil { // may load the script
			t.Fatal(err)
		}
		counting.reset()
		const calls = 10
		for i := 0; i < calls; i++ {
			if _, err := lim.Allow(ctx, "k"); err != nil {
				t.Fatal(err)
			}
		}
		rt, cmds := counting.snapshot()
		if diff := cmp.Diff(map[string]int{"EVALSHA": calls}, cmds); rt != calls || diff != "" {
			t.Errorf("%d decisions took %d round trips, commands (-want +got):\n%s", calls, rt, diff)
		}
	})

	t.Run("ScriptFlushCostsOneExtraCallNotAnError", func(t *testing.T) {
		counting := &counter{}
		c := b.needRedis(t, "no scripts")
		c.AddHook(counting)
		lim, err := redislimit.New(c, row.Small, redislimit.WithPrefix(testPrefix(t)))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			flushScripts(t, c)
			counting.reset()
			if _, err := lim.Allow(ctx, "k"); err != nil {
				t.Fatalf("Allow after SCRIPT FLUSH: %v", err)
			}
			if rt, cmds := counting.snapshot(); rt != 2 || cmds["EVALSHA"] != 1 || cmds["EVAL"] != 1 {
				t.Errorf("after SCRIPT FLUSH: %d round trips %v, want EVALSHA then EVAL", rt, cmds)
			}
		}
	})

	t.Run("RedisDownIsAnErrorNotADecision", func(t *testing.T) {
		b.needRedis(t, "no Redis to lose")
		c := redistest.NewClient(t, closedAddr(t), func(o *redis.Options) { o.MaxRetries, o.DialerRetries = -1, 1 })
		lim, err := redislimit.New(c, row.Small, redislimit.WithPrefix(testPrefix(t)))
		if err != nil {
			t.Fatal(err)
		}
		r, err := lim.Allow(ctx, "k")
		if err == nil {
			t.Fatalf("Allow with Redis down = %+v, nil error", r)
		}
		if !cmp.Equal(r, redislimit.Result{}) {
			t.Errorf("Allow with Redis down returned %+v alongside its error", r)
		}
	})

	t.Run("RedisClock", func(t *testing.T) {
		// Short real-time periods, on the server's clock (no WithClock).
		if row.MinPeriod > 200*time.Millisecond {
			t.Skipf("%s has no period under %v", row.Name, row.MinPeriod)
		}
		short := row.New(2, 200*time.Millisecond)
		lim, _ := b.newLimiter(t, short, nil)
		for i := 0; i < 2; i++ {
			if r, err := lim.Allow(ctx, "k"); err != nil || !r.Allowed {
				t.Fatalf("Allow #%d = %+v, %v", i, r, err)
			}
		}
		r, err := lim.Allow(ctx, "k")
		if err != nil || r.Allowed || r.RetryAfter <= 0 || r.RetryAfter > 200*time.Millisecond {
			t.Fatalf("Allow past the limit = %+v, %v; want denied with RetryAfter in (0, 200ms]", r, err)
		}
		time.Sleep(r.RetryAfter + 20*time.Millisecond)
		if r, err := lim.Allow(ctx, "k"); err != nil || !r.Allowed {
			t.Fatalf("Allow after RetryAfter on the Redis clock = %+v, %v; want allowed", r, err)
		}
	})

	t.Run("ConcurrentClientsAdmitExactlyTheLimit", func(t *testing.T) {
		const limit, clients, workers, tries = 40, 4, 8, 25
		alg := row.New(limit, time.Hour)
		var admitted, errs atomic.Int64
		var wg sync.WaitGroup
		var shared *redislimit.Limiter
		for i := 0; i < clients; i++ {
			lim, _ := b.newLimiter(t, alg, nil) // one client per app server
			if !b.inspectable() {
				// In-process limiters share nothing: one limiter for all.
				if shared == nil {
					shared = lim
				}
				lim = shared
			}
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := 0; j < tries; j++ {
						r, err := lim.Allow(ctx, "hot")
						if err != nil {
							errs.Add(1)
							continue
						}
						if r.Allowed {
							admitted.Add(1)
						}
					}
				}()
			}
		}
		wg.Wait()
		if errs.Load() != 0 || admitted.Load() != limit {
			t.Errorf("%d calls from %d clients: %d admitted, %d errors; want exactly %d admitted, no errors",
				clients*workers*tries, clients, admitted.Load(), errs.Load(), limit)
		}
	})
}

// ignoreParts compares Results without their Parts, which the tests of All
// check.
var ignoreParts = cmpopts.IgnoreFields(redislimit.Result{}, "Parts")

// assertTTL checks that key exists with a TTL in (0, max + TTLMargin]:
// its state matters for at most max, and every key lives a margin longer.
func assertTTL(t *testing.T, c redis.Cmdable, key string, max time.Duration) {
	t.Helper()
	max += redislimit.TTLMargin
	ttl, err := c.PTTL(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("PTTL: %v", err)
	}
	if ttl <= 0 || ttl > max {
		t.Errorf("PTTL(%q) = %v, want in (0, %v]", key, ttl, max)
	}
}

var _ = fmt.Sprint
