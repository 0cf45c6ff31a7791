package redislimit_test

import (
	"context"
	"errors"
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

// Step tests: every Result field at each step, for every step test of
// every algorithm, on every backend, with a fake clock passed to the
// scripts; then a cost above the capacity is refused.
func TestSteps(t *testing.T) {
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		for _, row := range algtest.Rows {
			for _, st := range row.Steps {
				t.Run(row.Name+st.Name, func(t *testing.T) {
					b.skipUnlessRuns(t, row)
					clk := clock.NewFake(epoch)
					lim, _ := b.newLimiter(t, st.Alg, clk)
					runSteps(t, lim, clk, "user", st.Steps)
					if _, err := lim.AllowN(context.Background(), "user", st.Alg.Limit()+1); !errors.Is(err, redislimit.ErrCostExceedsLimit) {
						t.Errorf("AllowN(%d) above the capacity: %v, want ErrCostExceedsLimit", st.Alg.Limit()+1, err)
					}
				})
			}
		}
	})
}

// A value left at a limiter's key by INCR-based code counts and gets a TTL.
func TestForeignCounterIsAdoptedWithTTL(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		clk := clock.NewFake(epoch)
		lim, c := newLimiter(t, b, redislimit.FixedWindow(5, time.Minute), clk)
		rk := redislimit.RedisKey(lim, "u")
		if err := c.Set(ctx, rk, "4", 0).Err(); err != nil {
			t.Fatal(err)
		}
		r, err := lim.Allow(ctx, "u")
		if err != nil || !r.Allowed || r.Remaining != 0 {
			t.Fatalf("Allow over a bare counter of 4 = %+v, %v; want allowed, 0 remaining", r, err)
		}
		assertTTL(t, c, rk, time.Minute)
		for _, v := range []string{"99", "garbage", "-3"} {
			if err := c.Set(ctx, rk, v, 0).Err(); err != nil {
				t.Fatal(err)
			}
			if _, err := lim.Allow(ctx, "u"); err != nil {
				t.Fatalf("Allow over %q: %v", v, err)
			}
			assertTTL(t, c, rk, time.Minute)
		}

		tb, c2 := newLimiter(t, b, redislimit.TokenBucket(1, time.Second, 5), clk)
		tk := redislimit.RedisKey(tb, "u")
		for _, v := range []string{"garbage", "1"} {
			if err := c2.Set(ctx, tk, v, 0).Err(); err != nil {
				t.Fatal(err)
			}
			if r, err := tb.Peek(ctx, "u"); err != nil || r.Remaining != 5 {
				t.Fatalf("Peek over %q = %+v, %v; want a full bucket", v, r, err)
			}
			if n, _ := c2.Exists(ctx, tk).Result(); n != 0 {
				assertTTL(t, c2, tk, 5*time.Second)
			}
		}
		// A key of the wrong type is an error, not a panic.
		sl, c3 := newLimiter(t, b, redislimit.SlidingLog(5, time.Minute), clk)
		if err := c3.Set(ctx, redislimit.RedisKey(sl, "u"), "x", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := sl.Allow(ctx, "u"); err == nil {
			t.Error("sliding log over a string key: no error")
		}
	})
}

func TestNewValidates(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	var nilClient *redis.Client
	ms := time.Millisecond
	tests := []struct {
		name   string
		client redis.Scripter
		alg    redislimit.Algorithm
		opts   []redislimit.Option
		want   error
	}{
		{"nil client", nil, redislimit.FixedWindow(1, ms), nil, redislimit.ErrNilClient},
		{"typed nil client", nilClient, redislimit.FixedWindow(1, ms), nil, redislimit.ErrNilClient},
		{"nil algorithm", c, nil, nil, redislimit.ErrNilAlgorithm},
		{"typed nil algorithm", c, (*badAlg)(nil), nil, redislimit.ErrNilAlgorithm},
		{"fw zero limit", c, redislimit.FixedWindow(0, time.Minute), nil, redislimit.ErrInvalidConfig},
		{"fw negative limit", c, redislimit.FixedWindow(-5, time.Minute), nil, redislimit.ErrInvalidConfig},
		{"fw zero window", c, redislimit.FixedWindow(5, 0), nil, redislimit.ErrInvalidConfig},
		{"fw negative window", c, redislimit.FixedWindow(5, -time.Second), nil, redislimit.ErrInvalidConfig},
		{"fw window under 1ms", c, redislimit.FixedWindow(5, 999*time.Microsecond), nil, redislimit.ErrInvalidConfig},
		{"fw window over max", c, redislimit.FixedWindow(5, redislimit.MaxWindow+1), nil, redislimit.ErrInvalidConfig},
		{"sl zero limit", c, redislimit.SlidingLog(0, time.Minute), nil, redislimit.ErrInvalidConfig},
		{"sl huge limit", c, redislimit.SlidingLog(1<<21, time.Minute), nil, redislimit.ErrInvalidConfig},
		{"sl window under 1ms", c, redislimit.SlidingLog(5, 0), nil, redislimit.ErrInvalidConfig},
		{"tb zero rate", c, redislimit.TokenBucket(0, time.Second, 5), nil, redislimit.ErrInvalidConfig},
		{"tb negative burst", c, redislimit.TokenBucket(1, time.Second, -1), nil, redislimit.ErrInvalidConfig},
		{"tb zero burst", c, redislimit.TokenBucket(1, time.Second, 0), nil, redislimit.ErrInvalidConfig},
		{"tb per under 1ms", c, redislimit.TokenBucket(1, time.Microsecond, 1), nil, redislimit.ErrInvalidConfig},
		{"tb rate over 2^50", c, redislimit.TokenBucket(1<<50+1, time.Second, 1), nil, redislimit.ErrInvalidConfig},
		{"tb burst over 2^50", c, redislimit.TokenBucket(1, time.Millisecond, 1<<50+1), nil, redislimit.ErrInvalidConfig},
		{"tb burst takes over max", c, redislimit.TokenBucket(1, redislimit.MaxWindow, 2), nil, redislimit.ErrInvalidConfig},
		{"tb burst takes 4/3µs over max", c, redislimit.TokenBucket(3, redislimit.MaxWindow*3/4+time.Microsecond, 4), nil, redislimit.ErrInvalidConfig},
		{"prefix with brace", c, redislimit.FixedWindow(1, ms), []redislimit.Option{redislimit.WithPrefix("a{b")}, redislimit.ErrInvalidConfig},
		{"custom empty name", c, badAlg{name: "", limit: 1}, nil, redislimit.ErrInvalidConfig},
		{"custom name with brace", c, badAlg{name: "x}", limit: 1}, nil, redislimit.ErrInvalidConfig},
		{"custom name of Concurrency's keys", c, badAlg{name: "cc", limit: 1}, nil, redislimit.ErrInvalidConfig},
		{"custom zero limit", c, badAlg{name: "x", limit: 0}, nil, redislimit.ErrInvalidConfig},
		{"custom no body", c, badAlg{name: "x", limit: 1, noBody: true}, nil, redislimit.ErrInvalidConfig},
		{"hashed keys, empty secret", c, redislimit.FixedWindow(1, ms), []redislimit.Option{redislimit.WithHashedKeys(nil)}, redislimit.ErrInvalidConfig},
		{"ok fw", c, redislimit.FixedWindow(1, ms), nil, nil},
		{"ok sl", c, redislimit.SlidingLog(1<<20, redislimit.MaxWindow), nil, nil},
		{"ok tb", c, redislimit.TokenBucket(1000, ms, 1), []redislimit.Option{redislimit.WithPrefix(""), redislimit.WithClock(nil)}, nil},
		{"ok tb faster than 1/µs", c, redislimit.TokenBucket(2000, ms, 1), nil, nil},
		{"ok tb interval of 1000/667µs", c, redislimit.TokenBucket(667, ms, 1), nil, nil},
		{"ok tb fastest", c, redislimit.TokenBucket(1<<50, ms, 1<<50), nil, nil},
		{"ok tb rate needing an approximation", c, redislimit.TokenBucket(100_000_007, time.Second, 100_000_007), nil, nil},
		{"ok tb burst takes max", c, redislimit.TokenBucket(3, redislimit.MaxWindow*3/4, 4), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim, err := redislimit.New(tt.client, tt.alg, tt.opts...)
			if !errors.Is(err, tt.want) {
				t.Fatalf("New() error = %v, want %v", err, tt.want)
			}
			if (lim == nil) != (tt.want != nil) {
				t.Fatalf("New() = %v, %v: want a Limiter exactly when there is no error", lim, err)
			}
		})
	}
}

// badAlg is an Algorithm whose body decides allowed (Lua) and whose
// write returns ret (Lua values).
type badAlg struct {
	name         string
	limit        int
	allowed, ret string
	noBody       bool
}

func (a badAlg) Name() string         { return a.name }
func (a badAlg) Limit() int           { return a.limit }
func (a badAlg) Args() ([]any, error) { return nil, nil }
func (a badAlg) Body() string {
	if a.noBody {
		return ""
	}
	allowed := a.allowed
	if allowed == "" {
		allowed = "true"
	}
	return "local function write() return " + a.ret + " end\nlocal function decide() return " + allowed + ", write end"
}

// A body that breaks the reply contract gives ErrMalformedReply, never a
// panic or a decision. (Replies of the wrong shape, which no body can
// cause, are FuzzParseReply's.)
func TestMalformedReplies(t *testing.T) {
	bodies := []badAlg{
		{ret: "'x', 0, 0"},
		{ret: "-1, 0, 0"},
		{ret: "0, 0, -5"},
		{allowed: "false", ret: "0, 0, 0"},
		{ret: "0, 5, 0"},
		{ret: "0, 0, 1e17"},
		{ret: "0, 0, {1}"},
		{ret: "0, 0"},
		{ret: ""},
	}
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		c := b.Client(t)
		for _, alg := range bodies {
			alg.name, alg.limit = "bad", 5
			lim, err := redislimit.New(c, alg)
			if err != nil {
				t.Fatal(err)
			}
			r, err := lim.Allow(context.Background(), "k")
			if !errors.Is(err, redislimit.ErrMalformedReply) {
				t.Errorf("write returning %q: Allow = %+v, %v; want ErrMalformedReply", alg.ret, r, err)
			}
			if !cmp.Equal(r, redislimit.Result{}) {
				t.Errorf("write returning %q: Result %+v alongside an error", alg.ret, r)
			}
			if err != nil && strings.Count(err.Error(), "redislimit:") != 1 {
				t.Errorf("write returning %q: error text %q, want the package prefix once", alg.ret, err)
			}
		}
		// A script error is passed on as an error.
		lim, _ := redislimit.New(c, badAlg{name: "bad", limit: 5, allowed: "error('boom')", ret: "0, 0, 0"})
		if _, err := lim.Allow(context.Background(), "k"); err == nil || errors.Is(err, redislimit.ErrMalformedReply) {
			t.Errorf("script error: %v, want the Redis error", err)
		}
	})
}

// Over any period t a token bucket admits exactly burst + ⌊rate×t/per⌋
// units when called often enough to take each token as it comes back, even
// when per/rate is not a whole number of µs.
func TestTokenBucketAdmitsItsRateExactly(t *testing.T) {
	const rate, burst = 3, 2
	// 2⅓s per token. Keys expire by Redis's real clock while the fake
	// clock runs far faster, so the periods are long enough that no key
	// expires during the test.
	per := 7 * time.Second
	check := func(t *testing.T, lim *redislimit.Limiter, clk *clock.Fake) {
		ctx := context.Background()
		admitted := 0
		const span, step = 200 * time.Second, 100 * time.Millisecond
		for el := time.Duration(0); el <= span; el += step {
			r, err := lim.Allow(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if r.Allowed {
				admitted++
			}
			clk.Advance(step)
		}
		if want := burst + int(rate*span/per); admitted != want {
			t.Errorf("admitted %d over %v, want %d", admitted, span, want)
		}
	}
	alg := redislimit.TokenBucket(rate, per, burst)
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		clk := clock.NewFake(epoch)
		lim, _ := newLimiter(t, b, alg, clk)
		check(t, lim, clk)
	})
	t.Run("in-process", func(t *testing.T) {
		clk := clock.NewFake(epoch)
		lim, err := redislimit.NewLocal(alg, redislimit.WithClock(clk.Now))
		if err != nil {
			t.Fatal(err)
		}
		check(t, lim, clk)
	})
}

// The same where per/rate is 100.5µs, and at 70,000 a second (14 + 2/7 µs
// a token), where an interval rounded to whole µs would be off by 0.5% and
// by 2 to 5%. In process only
// (TestLocalMatchesScripts holds the scripts to the same arithmetic): on
// Redis, keys this short-lived would expire by the real clock while the
// fake one races ahead.
func TestTokenBucketFractionalIntervalsAreExact(t *testing.T) {
	tests := []struct {
		rate, burst int
		per, step   time.Duration
	}{
		{20, 5, 2010 * time.Microsecond, 10 * time.Microsecond},
		{70000, 3, time.Second, time.Microsecond},
	}
	for _, tt := range tests {
		clk := clock.NewFake(epoch)
		lim, err := redislimit.NewLocal(redislimit.TokenBucket(tt.rate, tt.per, tt.burst), redislimit.WithClock(clk.Now))
		if err != nil {
			t.Fatal(err)
		}
		admitted := 0
		const span = time.Second
		for el := time.Duration(0); el <= span; el += tt.step {
			if r, _ := lim.Allow(context.Background(), "k"); r.Allowed {
				admitted++
			}
			clk.Advance(tt.step)
		}
		if want := tt.burst + int(int64(tt.rate)*int64(span)/int64(tt.per)); admitted != want {
			t.Errorf("TokenBucket(%d, %v, %d) admitted %d over %v, want %d", tt.rate, tt.per, tt.burst, admitted, span, want)
		}
	}
}

// A client clock before 1970 (negative µs) still limits.
func TestClockBefore1970(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		for _, row := range algtest.Rows {
			t.Run(row.Name, func(t *testing.T) {
				clk := clock.NewFake(time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC))
				lim, _ := newLimiter(t, b, row.Small, clk)
				admitted := 0
				for i := 0; i < 8; i++ {
					r, err := lim.Allow(context.Background(), "k")
					if err != nil {
						t.Fatal(err)
					}
					if r.Allowed {
						admitted++
					}
				}
				if want := row.Small.Limit(); admitted != want {
					t.Errorf("admitted %d of 8 with a 1960 clock, want %d", admitted, want)
				}
			})
		}
	})
}
