package redislimit_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
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

// Two parts of the same kind keep separate state, and every part's key is
// named as documented, in the user key's slot.
func TestAllKeys(t *testing.T) {
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		c := b.needRedis(t, "keys are Redis's")
		ctx := context.Background()
		clk := clock.NewFake(epoch)
		alg := redislimit.All(redislimit.FixedWindow(2, time.Second), redislimit.FixedWindow(5, time.Hour))
		lim := newRedisLimiter(t, c, alg, clk)
		for i := 0; i < 2; i++ {
			if r, err := lim.Allow(ctx, "user"); err != nil || !r.Allowed {
				t.Fatalf("Allow #%d = %+v, %v", i, r, err)
			}
		}
		clk.Advance(time.Second)
		r, err := lim.Allow(ctx, "user")
		if err != nil || !r.Allowed || r.Parts[0].Remaining != 1 || r.Parts[1].Remaining != 2 {
			t.Fatalf("Allow in the second 1s window = %+v, %v; want parts with 1 and 2 remaining", r, err)
		}
		want := []string{testPrefix(t) + "all:0:fw:{user}", testPrefix(t) + "all:1:fw:{user}"}
		if diff := cmp.Diff(want, redislimit.RedisKeys(lim, "user")); diff != "" {
			t.Errorf("keys (-want +got):\n%s", diff)
		}
		for _, k := range want {
			if n, err := c.Exists(ctx, k).Result(); err != nil || n != 1 {
				t.Errorf("EXISTS %s = %d, %v; want 1", k, n, err)
			}
			if cc, ok := c.(*redis.ClusterClient); ok {
				slot, err := cc.ClusterKeySlot(ctx, k).Result()
				wantSlot, _ := cc.ClusterKeySlot(ctx, "user").Result()
				if err != nil || slot != wantSlot {
					t.Errorf("slot of %s = %d, %v; want %d, the user key's", k, slot, err, wantSlot)
				}
			}
		}
		if n := keysUnder(t, c); n != 2 {
			t.Errorf("%d keys, want 2", n)
		}
		if err := lim.Reset(ctx, "user"); err != nil {
			t.Fatal(err)
		}
		if n := keysUnder(t, c); n != 0 {
			t.Errorf("after Reset, %d keys remain", n)
		}
		if r, err := lim.Peek(ctx, "user"); err != nil || r.Remaining != 2 || r.Parts[1].Remaining != 5 {
			t.Errorf("Peek after Reset = %+v, %v; want full", r, err)
		}
	})
}

// partModel is All's documented semantics run over each part's in-process
// state: every part decides without consuming, and only when all allow
// does each consume.
type partModel struct {
	states []redislimit.LocalState
	limits []int
}

func newPartModel(parts ...redislimit.Algorithm) *partModel {
	m := &partModel{}
	for _, p := range parts {
		m.states = append(m.states, p.(redislimit.LocalAlgorithm).NewLocalState(1))
		m.limits = append(m.limits, p.Limit())
	}
	return m
}

func (m *partModel) decide(now int64, n int, consume bool) redislimit.Result {
	rs := make([]redislimit.Result, len(m.states))
	ok := true
	for i, s := range m.states {
		rs[i] = s.Decide(now, n, false)
		ok = ok && rs[i].Allowed
	}
	if ok && consume {
		for i, s := range m.states {
			rs[i] = s.Decide(now, n, true)
		}
	}
	for i := range rs {
		rs[i].Limit = m.limits[i]
	}
	return whole(rs...)
}

// Differential test: All in Redis against its parts run through the model,
// on random traffic.
func TestAllMatchesItsParts(t *testing.T) {
	s := time.Second
	combos := [][]redislimit.Algorithm{
		{redislimit.TokenBucket(3, s, 4), redislimit.FixedWindow(6, 5*s)},
		{redislimit.FixedWindow(4, 2*s), redislimit.SlidingLog(7, 10*s), redislimit.TokenBucket(1, s, 5)},
		{redislimit.SlidingLog(3, s), redislimit.SlidingLog(5, 4*s)},
	}
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		b.needRedis(t, "the model is the in-process limiter")
		ctx := context.Background()
		for ci, parts := range combos {
			t.Run(fmt.Sprint(ci), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(ci), 7))
				clk := clock.NewFake(epoch)
				lim, _ := b.newLimiter(t, redislimit.All(parts...), clk)
				model := newPartModel(parts...)
				limit := parts[0].Limit()
				for _, p := range parts {
					limit = min(limit, p.Limit())
				}
				for i := 0; i < 400; i++ {
					clk.Advance(time.Duration(rng.IntN(400)) * time.Millisecond)
					n := 1 + rng.IntN(limit)
					peek := rng.IntN(5) == 0
					var got redislimit.Result
					var err error
					if peek {
						n = 1
						got, err = lim.Peek(ctx, "k")
					} else {
						got, err = lim.AllowN(ctx, "k", n)
					}
					if err != nil {
						t.Fatal(err)
					}
					want := model.decide(clk.Now().UnixMicro(), n, !peek)
					if diff := cmp.Diff(want, got); diff != "" {
						t.Fatalf("call %d (cost %d, peek %v): All differs from its parts (-parts +All):\n%s", i, n, peek, diff)
					}
				}
			})
		}
	})
}

// Many clients at once: All admits exactly its smallest part's limit and
// consumes nothing from the other parts for the calls it denies.
func TestAllExactUnderLoad(t *testing.T) {
	const clients, workers, tries = 4, 8, 25
	cases := []struct {
		name string
		alg  redislimit.Algorithm
		// admitted is how many calls may pass; left what each part keeps.
		admitted int
		left     []int
	}{
		{"FixedWindowDenies", redislimit.All(redislimit.SlidingLog(60, time.Hour), redislimit.FixedWindow(40, time.Hour)), 40, []int{20, 0}},
		{"TokenBucketDenies", redislimit.All(redislimit.FixedWindow(100, time.Hour), redislimit.TokenBucket(1, time.Hour, 40)), 40, []int{60, 0}},
	}
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		ctx := context.Background()
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				var admitted, errs atomic.Int64
				var wg sync.WaitGroup
				var shared *redislimit.Limiter
				for i := 0; i < clients; i++ {
					lim, _ := b.newLimiter(t, tc.alg, nil) // one client per app server
					if shared == nil {
						shared = lim
					}
					if !b.inspectable() {
						lim = shared // in-process limiters share nothing
					}
					for w := 0; w < workers; w++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for j := 0; j < tries; j++ {
								r, err := lim.Allow(ctx, "hot")
								switch {
								case err != nil:
									errs.Add(1)
								case r.Allowed:
									admitted.Add(1)
								}
							}
						}()
					}
				}
				wg.Wait()
				if errs.Load() != 0 || admitted.Load() != int64(tc.admitted) {
					t.Fatalf("%d calls: %d admitted, %d errors; want exactly %d admitted, no errors", clients*workers*tries, admitted.Load(), errs.Load(), tc.admitted)
				}
				r, err := shared.Peek(ctx, "hot")
				if err != nil {
					t.Fatal(err)
				}
				var left []int
				for _, p := range r.Parts {
					left = append(left, p.Remaining)
				}
				if diff := cmp.Diff(tc.left, left); diff != "" {
					t.Errorf("what each part keeps (-want +got):\n%s", diff)
				}
			})
		}
	})
}

// noBody is an algorithm whose Body is empty.
type noBody struct{ redislimit.Algorithm }

func (noBody) Body() string { return "" }

// bodyOnly is an algorithm that cannot decide in process.
type bodyOnly struct{ alg redislimit.Algorithm }

func (a bodyOnly) Name() string         { return "bodyonly" }
func (a bodyOnly) Limit() int           { return a.alg.Limit() }
func (a bodyOnly) Args() ([]any, error) { return a.alg.Args() }
func (a bodyOnly) Body() string         { return a.alg.Body() }

func TestAllValidates(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	fw := redislimit.FixedWindow(5, time.Second)
	many := make([]redislimit.Algorithm, 9)
	for i := range many {
		many[i] = fw
	}
	tests := []struct {
		name string
		alg  redislimit.Algorithm
		want []error
	}{
		{"NoParts", redislimit.All(), []error{redislimit.ErrInvalidConfig}},
		{"NilPart", redislimit.All(fw, nil), []error{redislimit.ErrInvalidConfig, redislimit.ErrNilAlgorithm}},
		{"NilInNested", redislimit.All(redislimit.All(nil), fw), []error{redislimit.ErrInvalidConfig, redislimit.ErrNilAlgorithm}},
		{"TooMany", redislimit.All(many...), []error{redislimit.ErrInvalidConfig}},
		{"PartWithoutBody", redislimit.All(fw, noBody{redislimit.TokenBucket(1, time.Second, 1)}), []error{redislimit.ErrInvalidConfig}},
		{"BadPart", redislimit.All(fw, redislimit.FixedWindow(0, time.Second)), []error{redislimit.ErrInvalidConfig}},
		{"BadWindow", redislimit.All(redislimit.SlidingLog(5, time.Microsecond), fw), []error{redislimit.ErrInvalidConfig}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim, err := redislimit.New(c, tt.alg)
			for _, want := range tt.want {
				if !errors.Is(err, want) {
					t.Errorf("New = %v, %v; want an error matching %v", lim, err, want)
				}
			}
		})
	}
	// Nested All flattens: 8 parts in two levels are fine, 9 are not.
	if _, err := redislimit.New(c, redislimit.All(redislimit.All(many[:4]...), redislimit.All(many[:4]...))); err != nil {
		t.Errorf("8 parts in nested Alls: %v", err)
	}
	if _, err := redislimit.New(c, redislimit.All(redislimit.All(many[:4]...), redislimit.All(many[:5]...))); !errors.Is(err, redislimit.ErrInvalidConfig) {
		t.Errorf("9 parts in nested Alls: %v, want ErrInvalidConfig", err)
	}
	// A part that cannot decide in process: fine with Redis alone, refused
	// for NewLocal and FailLocal.
	custom := redislimit.All(fw, bodyOnly{redislimit.TokenBucket(1, time.Second, 3)})
	if _, err := redislimit.New(c, custom); err != nil {
		t.Errorf("New(All with a body-only part): %v", err)
	}
	if _, err := redislimit.NewLocal(custom); !errors.Is(err, redislimit.ErrInvalidConfig) {
		t.Errorf("NewLocal(All with a body-only part): %v, want ErrInvalidConfig", err)
	}
	if _, err := redislimit.New(c, custom, redislimit.WithFailurePolicy(redislimit.FailLocal)); !errors.Is(err, redislimit.ErrInvalidConfig) {
		t.Errorf("FailLocal with a body-only part: %v, want ErrInvalidConfig", err)
	}
}

// Nested All decides as the flat one, with one part per leaf.
func TestAllNestedFlattens(t *testing.T) {
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		ctx := context.Background()
		clk := clock.NewFake(epoch)
		fw, tb, sl := redislimit.FixedWindow(4, time.Minute), redislimit.TokenBucket(1, time.Second, 3), redislimit.SlidingLog(5, time.Minute)
		nested, _ := b.newLimiter(t, redislimit.All(redislimit.All(fw, tb), sl), clk)
		flat, _ := b.newLimiter(t, redislimit.All(fw, tb, sl), clk, redislimit.WithPrefix(testPrefix(t)+"flat:"))
		for i := 0; i < 6; i++ {
			a, err1 := nested.Allow(ctx, "k")
			f, err2 := flat.Allow(ctx, "k")
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			if len(a.Parts) != 3 {
				t.Fatalf("nested All has %d parts, want 3", len(a.Parts))
			}
			if diff := cmp.Diff(f, a); diff != "" {
				t.Fatalf("call %d: nested differs from flat (-flat +nested):\n%s", i, diff)
			}
		}
	})
}

// A user-written algorithm with a Lua body takes part in All, and runs
// alone from its body.
func TestAllWithCustomBody(t *testing.T) {
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		c := b.needRedis(t, "the custom algorithm has only a body")
		ctx := context.Background()
		clk := clock.NewFake(epoch)
		q := redislimit.All(redislimit.TokenBucket(10, time.Second, 10), dailyQuota{limit: 12})
		lim := newRedisLimiter(t, c, q, clk)
		alone := newRedisLimiter(t, c, dailyQuota{limit: 3}, clk, redislimit.WithPrefix(testPrefix(t)+"alone:"))
		admitted := 0
		for i := 0; i < 30; i++ {
			clk.Advance(200 * time.Millisecond)
			r, err := lim.Allow(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if r.Allowed {
				admitted++
			}
		}
		if admitted != 12 {
			t.Errorf("All(bucket, daily quota of 12) admitted %d of 30, want 12", admitted)
		}
		for i := 0; i < 4; i++ {
			r, err := alone.Allow(ctx, "k")
			if err != nil || r.Allowed != (i < 3) {
				t.Errorf("daily quota of 3 alone, call %d = %+v, %v", i, r, err)
			}
		}
	})
}

// Peek, AllowMany, the deny cache and the failure policies on All.
func TestAllFeatures(t *testing.T) {
	s := time.Second
	alg := func() redislimit.Algorithm {
		return redislimit.All(redislimit.TokenBucket(1, s, 2), redislimit.FixedWindow(5, time.Minute))
	}
	t.Run("AllowManyMatchesAllow", func(t *testing.T) {
		limiterBackends(t, func(t *testing.T, b limiterBackend) {
			ctx := context.Background()
			clk := clock.NewFake(epoch)
			many, _ := b.newLimiter(t, alg(), clk)
			one, _ := b.newLimiter(t, alg(), clk, redislimit.WithPrefix(testPrefix(t)+"one:"))
			keys := []string{"a", "b", "a", "a", "c", "b", "a"}
			got, err := many.AllowMany(ctx, keys)
			if err != nil {
				t.Fatal(err)
			}
			for i, k := range keys {
				want, err := one.Allow(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, got[i]); diff != "" {
					t.Errorf("key %d (%s): AllowMany differs from Allow (-Allow +AllowMany):\n%s", i, k, diff)
				}
			}
		})
	})
	t.Run("DenyCache", func(t *testing.T) {
		c, counting := countedServer(t)
		ctx := context.Background()
		clk := clock.NewFake(epoch)
		lim := newRedisLimiter(t, c, redislimit.All(redislimit.TokenBucket(1, s, 1), redislimit.FixedWindow(1, time.Hour)), clk, redislimit.WithDenyCache(100))
		if r, err := lim.Allow(ctx, "k"); err != nil || !r.Allowed {
			t.Fatalf("first Allow = %+v, %v", r, err)
		}
		first, err := lim.Allow(ctx, "k")
		if err != nil || first.Allowed {
			t.Fatalf("second Allow = %+v, %v; want denied", first, err)
		}
		counting.reset()
		clk.Advance(100 * time.Millisecond)
		r, err := lim.Allow(ctx, "k")
		if rt, _ := counting.snapshot(); err != nil || rt != 0 {
			t.Fatalf("denied again: %v, %d round trips; want an answer without Redis", err, rt)
		}
		want := first
		want.RetryAfter -= 100 * time.Millisecond
		want.ResetAfter -= 100 * time.Millisecond
		want.Parts = []redislimit.Result{first.Parts[0], first.Parts[1]}
		for i := range want.Parts {
			if !want.Parts[i].Allowed {
				want.Parts[i].RetryAfter -= 100 * time.Millisecond
			}
			want.Parts[i].ResetAfter -= 100 * time.Millisecond
		}
		if diff := cmp.Diff(want, r); diff != "" {
			t.Errorf("the deny cache's answer (-aged denial +got):\n%s", diff)
		}
		// Once the bucket could admit again, the parts' answer is not sure:
		// Redis is asked.
		clk.Advance(s)
		counting.reset()
		if r, err := lim.Allow(ctx, "k"); err != nil || r.Allowed {
			t.Fatalf("Allow with the window spent = %+v, %v; want denied", r, err)
		}
		if rt, _ := counting.snapshot(); rt != 1 {
			t.Errorf("%d round trips after the bucket refilled, want 1", rt)
		}
	})
	t.Run("FailurePolicies", func(t *testing.T) {
		ctx := context.Background()
		c := redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1})
		defer c.Close()
		for _, tc := range []struct {
			policy redislimit.FailurePolicy
			want   redislimit.Result
		}{
			{redislimit.FailOpen, whole(
				redislimit.Result{Allowed: true, Limit: 2, Remaining: 2, Degraded: true},
				redislimit.Result{Allowed: true, Limit: 5, Remaining: 5, Degraded: true})},
			{redislimit.FailClosed, whole(
				redislimit.Result{Limit: 2, RetryAfter: 500 * time.Millisecond, ResetAfter: 500 * time.Millisecond, Degraded: true},
				redislimit.Result{Limit: 5, RetryAfter: 500 * time.Millisecond, ResetAfter: 500 * time.Millisecond, Degraded: true})},
			{redislimit.FailLocal, whole(
				redislimit.Result{Allowed: true, Limit: 2, Remaining: 1, ResetAfter: s, Degraded: true},
				redislimit.Result{Allowed: true, Limit: 5, Remaining: 4, ResetAfter: time.Minute, Degraded: true})},
		} {
			clk := clock.NewFake(epoch)
			lim := newRedisLimiter(t, c, alg(), clk, redislimit.WithFailurePolicy(tc.policy), redislimit.WithTimeout(time.Second))
			r, err := lim.Allow(ctx, "k")
			if err != nil {
				t.Fatalf("%v: %v", tc.policy, err)
			}
			if diff := cmp.Diff(tc.want, r); diff != "" {
				t.Errorf("%v with Redis down (-want +got):\n%s", tc.policy, diff)
			}
		}
	})
	t.Run("Wait", func(t *testing.T) {
		c, _ := countedServer(t)
		lim := newRedisLimiter(t, c, redislimit.All(redislimit.TokenBucket(1, 100*time.Millisecond, 1), redislimit.FixedWindow(3, time.Hour)), nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		for i := 0; i < 3; i++ {
			if err := lim.Wait(ctx, "k"); err != nil {
				t.Fatalf("Wait #%d: %v", i, err)
			}
		}
		if d := time.Since(start); d < 180*time.Millisecond {
			t.Errorf("3 waits on a bucket of 1 per 100ms took %v, want at least 200ms", d)
		}
		// The window is spent for an hour: past the context's deadline.
		short, cancel2 := context.WithTimeout(context.Background(), time.Second)
		defer cancel2()
		if err := lim.Wait(short, "k"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait with the window spent: %v, want DeadlineExceeded", err)
		}
	})
}

// FuzzAll feeds All of two fuzzed parts, costs and keys to New, NewLocal
// and AllowN: no panic, errors are sentinels, and a decision keeps the
// Result contract, for the whole and each part, with the whole merged
// from its parts as documented. The Redis-backed limiter runs on
// miniredis.
func FuzzAll(f *testing.F) {
	// w1 and w2 pick rows of algtest.Rows, as in FuzzAllowN.
	f.Add("user", 1, uint8(0), 5, int64(time.Minute), uint8(3), 3, int64(time.Second))
	f.Add("k", 4, uint8(1), 5, int64(time.Second), uint8(2), 9, int64(time.Hour))
	f.Add("k", 9, uint8(0), 5, int64(time.Second), uint8(0), 9, int64(time.Hour))
	f.Add("{k}", 2, uint8(3), 2, int64(time.Millisecond), uint8(1), 0, int64(time.Second))
	f.Add("", 1, uint8(2), 1, int64(time.Second), uint8(3), 1, int64(-5))
	f.Add("k", 3, uint8(4), 4, int64(time.Second), uint8(1), 6, int64(time.Minute))
	f.Add("k", 2, uint8(5), 4, int64(31*24*time.Hour), uint8(3), 6, int64(time.Minute))
	m := redistest.Mini(f)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	f.Cleanup(func() { _ = c.Close() })
	f.Fuzz(func(t *testing.T, key string, n int, w1 uint8, l1 int, s1 int64, w2 uint8, l2 int, s2 int64) {
		a1, a2 := fuzzAlgorithm(w1, l1, s1), fuzzAlgorithm(w2, l2, s2)
		alg := redislimit.All(a1, a2)
		// A part that is an All itself is flattened into its parts.
		parts := partsOf(a1) + partsOf(a2)
		opts := []redislimit.Option{redislimit.WithTimeout(time.Minute)}
		local, lerr := redislimit.NewLocal(alg, opts...)
		remote, rerr := redislimit.New(c, alg, append(opts, redislimit.WithFailurePolicy(redislimit.FailLocal))...)
		for _, err := range []error{lerr, rerr} {
			if err != nil && !isSentinel(err) {
				t.Fatalf("New: %v is not a sentinel error", err)
			}
		}
		for _, lim := range []*redislimit.Limiter{local, remote} {
			if lim == nil {
				continue
			}
			for i := 0; i < 3; i++ {
				r, ok := fuzzDecide(t, lim, key, n)
				if !ok {
					break
				}
				if len(r.Parts) != parts {
					t.Fatalf("Result %+v: %d parts, want %d", r, len(r.Parts), parts)
				}
				for _, p := range r.Parts {
					checkResult(t, p)
				}
				if diff := cmp.Diff(whole(r.Parts...), r); diff != "" {
					t.Fatalf("the whole Result is not merged from its parts (-merged +got):\n%s", diff)
				}
			}
		}
	})
}

// partsOf returns how many parts a valid alg has within an All: its
// parts if it is an All, else 1. Every row's algorithm runs in process.
func partsOf(alg redislimit.Algorithm) int {
	lim, err := redislimit.NewLocal(alg)
	if err != nil {
		return 0
	}
	return len(lim.Quotas())
}

// All of one part decides as that part alone, in Redis and in process.
func TestAllOfOnePart(t *testing.T) {
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		ctx := context.Background()
		for _, row := range algtest.Rows {
			t.Run(row.Name, func(t *testing.T) {
				b.skipUnlessRuns(t, row)
				clk := clock.NewFake(epoch)
				one, _ := b.newLimiter(t, redislimit.All(row.Small), clk)
				nested, _ := b.newLimiter(t, redislimit.All(redislimit.All(row.Small)), clk, redislimit.WithPrefix(testPrefix(t)+"nested:"))
				alone, _ := b.newLimiter(t, row.Small, clk, redislimit.WithPrefix(testPrefix(t)+"alone:"))
				for i := 0; i < 8; i++ {
					want, err := alone.Allow(ctx, "k")
					if err != nil {
						t.Fatal(err)
					}
					for _, lim := range []*redislimit.Limiter{one, nested} {
						got, err := lim.Allow(ctx, "k")
						if err != nil {
							t.Fatal(err)
						}
						if diff := cmp.Diff(want, got, ignoreParts); diff != "" || len(got.Parts) == 0 {
							t.Fatalf("call %d: All of one part (%d parts) differs from the part alone (-alone +All):\n%s", i, len(got.Parts), diff)
						}
					}
					clk.Advance(7 * time.Second)
				}
			})
		}
	})
}

// The deny cache answers All only for the cost Redis denied: a larger
// cost can change what the parts say.
func TestAllDenyCacheLargerCost(t *testing.T) {
	c, counting := countedServer(t)
	ctx := context.Background()
	clk := clock.NewFake(epoch)
	alg := redislimit.All(redislimit.FixedWindow(5, time.Hour), redislimit.TokenBucket(1, time.Hour, 4))
	lim := newRedisLimiter(t, c, alg, clk, redislimit.WithDenyCache(100))
	twin := newRedisLimiter(t, c, alg, clk, redislimit.WithPrefix(testPrefix(t)+"twin:"))
	var rt int
	for _, n := range []int{4, 1, 2, 2} {
		counting.reset()
		got, err := lim.AllowN(ctx, "k", n)
		if err != nil {
			t.Fatal(err)
		}
		rt, _ = counting.snapshot()
		want, err := twin.AllowN(ctx, "k", n)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("AllowN(%d) with the deny cache differs from Redis (-Redis +cache):\n%s", n, diff)
		}
	}
	if rt != 0 {
		t.Errorf("the last AllowN(2), denied before for the same cost, took %d round trips, want 0", rt)
	}
}

// A user key that begins with '}' gets parts in one slot, and shares no
// state with the key that its hash spells.
func TestAllKeysThatBeginWithABrace(t *testing.T) {
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		c := b.needRedis(t, "keys are Redis's")
		ctx := context.Background()
		lim := newRedisLimiter(t, c, redislimit.All(redislimit.FixedWindow(1, time.Hour), redislimit.FixedWindow(5, time.Hour)), nil)
		keys := redislimit.RedisKeys(lim, "}bob")
		hash := keys[0][strings.Index(keys[0], "#{")+2 : strings.Index(keys[0], "}")]
		for _, k := range []string{"}bob", hash, "}bob}", hash + "}}bob"} {
			if r, err := lim.Allow(ctx, k); err != nil || !r.Allowed {
				t.Errorf("first Allow on %q = %+v, %v; want allowed (its own state)", k, r, err)
			}
		}
		if cc, ok := c.(*redis.ClusterClient); ok {
			s0, _ := cc.ClusterKeySlot(ctx, keys[0]).Result()
			s1, _ := cc.ClusterKeySlot(ctx, keys[1]).Result()
			if s0 != s1 {
				t.Errorf("slots %d and %d for the parts of one key", s0, s1)
			}
		}
	})
}

// FailLocal with a cost above a part's local share: that part denies.
func TestAllFailLocalCostAboveShare(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1})
	defer c.Close()
	lim := newRedisLimiter(t, c, redislimit.All(redislimit.FixedWindow(10, time.Hour), redislimit.TokenBucket(1, time.Hour, 20)), clock.NewFake(epoch),
		redislimit.WithFailurePolicy(redislimit.FailLocal), redislimit.WithLocalInstances(5), redislimit.WithTimeout(time.Second))
	r, err := lim.AllowN(context.Background(), "k", 3)
	if err != nil {
		t.Fatal(err)
	}
	if r.Allowed || r.Parts[0].Allowed || !r.Parts[1].Allowed || !r.Degraded {
		t.Errorf("AllowN(3) with local shares 2 and 4 = %+v; want denied by the first part only, degraded", r)
	}
}

// The largest All, eight parts, compiles and decides in Redis.
func TestAllOfEightParts(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		var parts []redislimit.Algorithm
		for i := 0; i < 2; i++ {
			parts = append(parts, redislimit.SlidingWindow(9, time.Minute), redislimit.SlidingLog(9, time.Minute),
				redislimit.FixedWindow(9, time.Minute), redislimit.TokenBucket(9, time.Minute, 9+i))
		}
		lim, _ := newLimiter(t, b, redislimit.All(parts...), clock.NewFake(epoch))
		for i := 0; i < 10; i++ {
			r, err := lim.Allow(context.Background(), "k")
			if err != nil || r.Allowed != (i < 9) || len(r.Parts) != 8 {
				t.Fatalf("Allow #%d = %+v, %v; want %v with 8 parts", i, r, err, i < 9)
			}
		}
	})
}

func TestQuotas(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	s := time.Second
	tests := []struct {
		alg  redislimit.Algorithm
		want []redislimit.Quota
	}{
		{redislimit.FixedWindow(5, time.Minute), []redislimit.Quota{{Limit: 5, Window: time.Minute}}},
		{redislimit.SlidingLog(7, s), []redislimit.Quota{{Limit: 7, Window: s}}},
		{redislimit.SlidingWindow(9, time.Hour), []redislimit.Quota{{Limit: 9, Window: time.Hour}}},
		// 10 tokens at 2 a second: 5 s from empty to full.
		{redislimit.TokenBucket(2, s, 10), []redislimit.Quota{{Limit: 10, Window: 5 * s}}},
		{redislimit.All(redislimit.TokenBucket(1, s, 3), redislimit.FixedWindow(100, time.Hour)),
			[]redislimit.Quota{{Limit: 3, Window: 3 * s}, {Limit: 100, Window: time.Hour}}},
		// An algorithm defined elsewhere gives its Window, or none.
		{dailyQuota{limit: 4}, []redislimit.Quota{{Limit: 4, Window: 24 * time.Hour}}},
		{bodyOnly{redislimit.FixedWindow(6, time.Minute)}, []redislimit.Quota{{Limit: 6}}},
	}
	for _, tt := range tests {
		lim, err := redislimit.New(c, tt.alg)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, lim.Quotas()); diff != "" {
			t.Errorf("Quotas of %s (-want +got):\n%s", tt.alg.Name(), diff)
		}
	}
	local, err := redislimit.NewLocal(redislimit.FixedWindow(10, s), redislimit.WithLocalInstances(4))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]redislimit.Quota{{Limit: 2, Window: s}}, local.Quotas()); diff != "" {
		t.Errorf("Quotas of a local limiter of 4 instances (-want +got):\n%s", diff)
	}
}
