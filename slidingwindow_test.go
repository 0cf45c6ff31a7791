package redislimit_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// A value left at the key by other code counts as that many units, clamped
// to [0, limit], in a window opening now, and is rewritten with a TTL.
func TestSlidingWindowAdoptsForeignValues(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		for _, tc := range []struct {
			value string
			want  redislimit.Result // of Allow over it
		}{
			{"4", allowed(5, 0, 2*time.Minute)},
			{"99", denied(5, 0, 72*time.Second, 2*time.Minute)}, // 5 units: fits once they weigh 4
			{"-3", allowed(5, 4, 2*time.Minute)},
			{"garbage", allowed(5, 4, 2*time.Minute)},
			{"1 2", allowed(5, 4, 2*time.Minute)},
		} {
			clk := clock.NewFake(epoch)
			lim, c := newLimiter(t, b, redislimit.SlidingWindow(5, time.Minute), clk)
			rk := redislimit.RedisKey(lim, "u")
			if err := c.Set(ctx, rk, tc.value, 0).Err(); err != nil {
				t.Fatal(err)
			}
			r, err := lim.Allow(ctx, "u")
			if err != nil {
				t.Fatalf("Allow over %q: %v", tc.value, err)
			}
			if diff := cmp.Diff(tc.want, r); diff != "" {
				t.Errorf("Allow over %q (-want +got):\n%s", tc.value, diff)
			}
			assertTTL(t, c, rk, 2*time.Minute)
		}
	})
}

// The script and the in-process state give the same Results over random
// sequences at µs scale, with large limits and long windows, and with the
// clock stepping back after an admitted call (so that no state expired on
// one side only); and every RetryAfter is exact: the same call is denied a
// µs before it and admitted at it.
func TestSlidingWindowRetryAfterIsExact(t *testing.T) {
	us := time.Microsecond
	configs := []struct {
		limit  int
		window time.Duration
		steps  int
	}{
		{3, time.Millisecond, 300},
		{7, 10 * time.Second, 300},
		{1000003, 7 * time.Millisecond, 300},
		{1 << 40, time.Hour, 300},
		{1 << 40, redislimit.MaxWindow / 2, 30}, // few steps: µs since 1970 must stay below 2^53
	}
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		for ci, cf := range configs {
			t.Run(fmt.Sprint(cf.limit, "/", cf.window), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(ci), 3))
				alg := redislimit.SlidingWindow(cf.limit, cf.window)
				clk := clock.NewFake(epoch)
				remote, _ := newLimiter(t, b, alg, clk)
				local, err := redislimit.NewLocal(alg, redislimit.WithClock(clk.Now))
				if err != nil {
					t.Fatal(err)
				}
				ctx := context.Background()
				w := int64(cf.window / us)
				call := func(what string, n int) redislimit.Result {
					t.Helper()
					want, werr := remote.AllowN(ctx, "k", n)
					got, gerr := local.AllowN(ctx, "k", n)
					if werr != nil || gerr != nil {
						t.Fatalf("%s: errors %v (Redis), %v (local)", what, werr, gerr)
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Fatalf("%s at %v: AllowN(%d): local differs from Redis (-redis +local):\n%s", what, clk.Now().Sub(epoch), n, diff)
					}
					return want
				}
				lastAllowed := false
				for i := 0; i < cf.steps; i++ {
					var adv int64
					switch x := rng.IntN(10); {
					case x < 2:
					case x < 3:
						adv = 1
					case x < 7:
						adv = rng.Int64N(w/8 + 1)
					case x < 9:
						adv = rng.Int64N(w)
					default:
						adv = rng.Int64N(3 * w)
					}
					if lastAllowed && rng.IntN(5) == 0 {
						adv = -rng.Int64N(w + w/2)
					}
					clk.Advance(time.Duration(adv) * us)
					var n int
					switch rng.IntN(3) {
					case 0:
						n = 1
					case 1:
						n = 1 + rng.IntN(cf.limit)
					default:
						n = cf.limit - rng.IntN(min(cf.limit, 3))
					}
					r := call(fmt.Sprint("step ", i), n)
					lastAllowed = r.Allowed
					if r.Allowed {
						continue
					}
					clk.Advance(r.RetryAfter - us)
					if p := call(fmt.Sprint("step ", i, ", a µs before RetryAfter ", r.RetryAfter), n); p.Allowed && r.RetryAfter > us {
						t.Fatalf("step %d: denied with RetryAfter %v, admitted a µs earlier: %+v", i, r.RetryAfter, p)
					}
					clk.Advance(us)
					if p := call(fmt.Sprint("step ", i, ", at RetryAfter ", r.RetryAfter), n); !p.Allowed {
						t.Fatalf("step %d: denied at RetryAfter %v: %+v", i, r.RetryAfter, p)
					}
					lastAllowed = true
				}
			})
		}
	})
}

// A sliding window takes part in All, in Redis as in process memory.
func TestSlidingWindowInAll(t *testing.T) {
	alg := redislimit.All(redislimit.SlidingWindow(3, 10*time.Second), redislimit.TokenBucket(1, time.Second, 5))
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		clk := clock.NewFake(epoch)
		remote, _ := newLimiter(t, b, alg, clk)
		local, err := redislimit.NewLocal(alg, redislimit.WithClock(clk.Now))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for i, want := range []bool{true, true, true, false} {
			r, err := remote.Allow(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if r.Allowed != want || r.Parts[0].Allowed != want || !r.Parts[1].Allowed {
				t.Errorf("Allow #%d = %+v, want allowed %v by the sliding window, and by the bucket", i+1, r, want)
			}
			l, err := local.Allow(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(r, l); diff != "" {
				t.Errorf("Allow #%d: local differs from Redis (-redis +local):\n%s", i+1, diff)
			}
		}
	})
}

// A key's state is one short string however many calls it took: MEMORY
// USAGE on a real server stays at most 200 bytes, where a sliding log of
// the same limit holds an entry per unit.
func TestSlidingWindowMemory(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	ctx := context.Background()
	const limit = 1000
	clk := clock.NewFake(epoch)
	sw := newRedisLimiter(t, c, redislimit.SlidingWindow(limit, time.Minute), clk)
	sl := newRedisLimiter(t, c, redislimit.SlidingLog(limit, time.Minute), clk)
	admitted := 0
	for i := 0; i < 3000; i++ {
		clk.Advance(37 * time.Millisecond) // 1620 calls a minute
		r, err := sw.Allow(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if r.Allowed {
			admitted++
		}
		if _, err := sl.Allow(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
	swKey, slKey := redislimit.RedisKey(sw, "k"), redislimit.RedisKey(sl, "k")
	swBytes, err := c.MemoryUsage(ctx, swKey).Result()
	if err != nil {
		t.Fatalf("MEMORY USAGE: %v", err)
	}
	slBytes, err := c.MemoryUsage(ctx, slKey).Result()
	if err != nil {
		t.Fatalf("MEMORY USAGE: %v", err)
	}
	v, _ := c.Get(ctx, swKey).Result()
	t.Logf("after 3000 calls (%d admitted): sliding window key %q (%d bytes of name) holds %q, MEMORY USAGE %d bytes; sliding log %d bytes",
		admitted, swKey, len(swKey), v, swBytes, slBytes)
	if swBytes > 200 {
		t.Errorf("MEMORY USAGE of a sliding window key = %d bytes, want at most 200", swBytes)
	}
}

// traffic is a sequence of calls of cost 1: their times from the start,
// in order.
type traffic []time.Duration

// evenTraffic is a call every gap for span.
func evenTraffic(gap, span time.Duration) traffic {
	var tr traffic
	for at := time.Duration(0); at < span; at += gap {
		tr = append(tr, at)
	}
	return tr
}

// burstyTraffic is bursts of 1 to maxBurst calls at one instant, a random
// gap of up to maxGap apart (in whole µs, as the limiter reads clocks), for
// span.
func burstyTraffic(seed uint64, maxBurst int, maxGap, span time.Duration) traffic {
	rng := rand.New(rand.NewPCG(seed, 7))
	var tr traffic
	for at := time.Duration(0); at < span; at += time.Duration(rng.Int64N(int64(maxGap/time.Microsecond))) * time.Microsecond {
		for range 1 + rng.IntN(maxBurst) {
			tr = append(tr, at)
		}
	}
	return tr
}

// edgeTraffic is the worst case of a sliding window counter whose grid
// starts at +0: one call at +0, limit-1 at the window's last µs, then
// calls every window/(4×limit) through the next window, admitted as the
// previous window's weight fades.
func edgeTraffic(limit int, window time.Duration) traffic {
	tr := traffic{0}
	for range limit - 1 {
		tr = append(tr, window-time.Microsecond)
	}
	gap := (window / time.Duration(4*limit)).Truncate(time.Microsecond)
	for at := window; at < 2*window; at += gap {
		tr = append(tr, at)
	}
	return tr
}

// admit makes the calls of tr on lim, moving clk from epoch, and returns
// the times of those admitted.
func admit(t *testing.T, lim *redislimit.Limiter, clk *clock.Fake, tr traffic) traffic {
	t.Helper()
	var got traffic
	for _, at := range tr {
		clk.Set(epoch.Add(at))
		r, err := lim.Allow(context.Background(), "k")
		if err != nil {
			t.Fatalf("Allow at +%v: %v", at, err)
		}
		if r.Allowed {
			got = append(got, at)
		}
	}
	return got
}

// mostInWindow returns the most calls of tr in any interval of length
// window.
func mostInWindow(tr traffic, window time.Duration) int {
	most, j := 0, 0
	for i := range tr {
		for j < len(tr) && tr[j] < tr[i]+window {
			j++
		}
		most = max(most, j-i)
	}
	return most
}

// The same traffic through a sliding window counter and a sliding log of
// the same limit: the counter never admits 2×limit in any window-long
// interval, admits about what the log admits on even traffic, and reaches
// its bound on the worst case. The counts and errors are logged.
func TestSlidingWindowAgainstSlidingLog(t *testing.T) {
	const limit = 100
	w := time.Minute
	tests := []struct {
		name   string
		limit  int
		window time.Duration
		tr     traffic
		// maxErr, when positive, bounds |counter - log| / log.
		maxErr float64
		// leastMost, when positive, is the least the counter's busiest
		// interval must hold.
		leastMost int
		redis     bool // also on redis-server
	}{
		{"even/4x", limit, w, evenTraffic(150*time.Millisecond, 10*time.Minute), 0.10, 0, false},
		{"even/1.2x", limit, w, evenTraffic(500*time.Millisecond, 10*time.Minute), 0.10, 0, false},
		{"bursty", limit, w, burstyTraffic(1, 150, 20*time.Second, 20*time.Minute), 0, 0, false},
		{"edge", limit, w, edgeTraffic(limit, w), 0, 2*limit - 2, false},
		{"1ms/bursty", 3, time.Millisecond, burstyTraffic(2, 5, 400*time.Microsecond, 200*time.Millisecond), 0, 0, true},
		{"1ms/edge", 3, time.Millisecond, edgeTraffic(3, time.Millisecond), 0, 2*3 - 2, true},
	}
	type backend struct {
		name string
		new  func(t *testing.T, alg redislimit.Algorithm, clk *clock.Fake) *redislimit.Limiter
	}
	backends := []backend{{"in-process", func(t *testing.T, alg redislimit.Algorithm, clk *clock.Fake) *redislimit.Limiter {
		lim, err := redislimit.NewLocal(alg, redislimit.WithClock(clk.Now))
		if err != nil {
			t.Fatal(err)
		}
		return lim
	}}}
	// Rows marked redis also run on one redis-server, when installed.
	var redisAddr string
	if redistest.ServerPath() != "" || redistest.Required() {
		redisAddr = redistest.Start(t).Addr()
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := backends
			if tt.redis && redisAddr != "" {
				bs = append(bs[:len(bs):len(bs)], backend{"redis-server", func(t *testing.T, alg redislimit.Algorithm, clk *clock.Fake) *redislimit.Limiter {
					return newRedisLimiter(t, redistest.NewClient(t, redisAddr), alg, clk)
				}})
			}
			for _, b := range bs {
				t.Run(b.name, func(t *testing.T) {
					clk := clock.NewFake(epoch)
					sw := admit(t, b.new(t, redislimit.SlidingWindow(tt.limit, tt.window), clk), clk, tt.tr)
					clk = clock.NewFake(epoch)
					sl := admit(t, b.new(t, redislimit.SlidingLog(tt.limit, tt.window), clk), clk, tt.tr)
					swMost, slMost := mostInWindow(sw, tt.window), mostInWindow(sl, tt.window)
					rel := float64(len(sw)-len(sl)) / float64(len(sl))
					t.Logf("%d calls, limit %d per %v: sliding window admitted %d (at most %d in a window), sliding log %d (at most %d): error %+.2f%%",
						len(tt.tr), tt.limit, tt.window, len(sw), swMost, len(sl), slMost, 100*rel)
					if slMost > tt.limit {
						t.Errorf("sliding log admitted %d in one window, want at most %d", slMost, tt.limit)
					}
					if swMost > 2*tt.limit-1 {
						t.Errorf("sliding window admitted %d in one window, want at most 2×%d-1", swMost, tt.limit)
					}
					if tt.maxErr > 0 && (rel > tt.maxErr || rel < -tt.maxErr) {
						t.Errorf("sliding window admitted %d, sliding log %d: error %+.2f%%, want within ±%.0f%%", len(sw), len(sl), 100*rel, 100*tt.maxErr)
					}
					if swMost < tt.leastMost {
						t.Errorf("sliding window admitted at most %d in one window, want the worst case, %d", swMost, tt.leastMost)
					}
				})
			}
		})
	}
}
