package redislimit_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// keyUser makes calls on one key with algorithms of one kind whose
// parameters change between calls. In Redis, each set of parameters has its
// own limiter, all with the running test's prefix, so that they share the
// key. In process, the key's state passes to new parameters through carry
// (redislimit.CarryLocal), and is never dropped, as a Redis key outlives
// the fake clock's jumps in these tests.
type keyUser struct {
	t      *testing.T
	clk    *clock.Fake
	client redis.UniversalClient // nil in process
	lims   map[redislimit.Algorithm]*redislimit.Limiter
	alg    redislimit.Algorithm // in process: the parameters of state
	state  redislimit.LocalState
}

// newKeyUser returns a keyUser on b's Redis, or in process when b has none.
func newKeyUser(t *testing.T, b limiterBackend, clk *clock.Fake) *keyUser {
	u := &keyUser{t: t, clk: clk, lims: map[redislimit.Algorithm]*redislimit.Limiter{}}
	if b.client != nil {
		u.client = b.client(t)
	}
	return u
}

// call makes one call with alg's parameters: AllowN(n), or Peek when peek
// is set.
func (u *keyUser) call(alg redislimit.Algorithm, n int, peek bool) redislimit.Result {
	u.t.Helper()
	if u.client == nil {
		now := u.clk.Now().UnixMicro()
		if u.state == nil || alg != u.alg {
			u.state, u.alg = redislimit.CarryLocal(alg.(redislimit.LocalAlgorithm), u.state, now), alg
		}
		if peek {
			n = 1
		}
		r := u.state.Decide(now, n, !peek)
		r.Limit = alg.Limit()
		return r
	}
	lim := u.lims[alg]
	if lim == nil {
		lim = newRedisLimiter(u.t, u.client, alg, u.clk)
		u.lims[alg] = lim
	}
	var r redislimit.Result
	var err error
	if peek {
		r, err = lim.Peek(context.Background(), "user")
	} else {
		r, err = lim.AllowN(context.Background(), "user", n)
	}
	if err != nil {
		u.t.Fatalf("%s(%d) with %+v: %v", map[bool]string{false: "AllowN", true: "Peek"}[peek], n, alg, err)
	}
	return r
}

// paramStep is one call in a test of changing parameters: move the clock
// by advance, then call AllowN(n), or Peek when n is 0, with alg's
// parameters, and expect want.
type paramStep struct {
	alg     redislimit.Algorithm
	advance time.Duration
	n       int
	want    redislimit.Result
}

// A key keeps its usage when its parameters change: a higher limit grants
// only what the usage leaves, a lower one denies until the usage has
// passed, and a new window length moves where it passes, as each
// algorithm documents.
func TestParameterChanges(t *testing.T) {
	const s, us = time.Second, time.Microsecond
	min := time.Minute
	fw := redislimit.FixedWindow
	sl := redislimit.SlidingLog
	sw := redislimit.SlidingWindow
	tests := []struct {
		name  string
		steps []paramStep
	}{
		{"FixedWindow/Upgrade", []paramStep{
			{fw(10, min), 0, 10, allowed(10, 0, min)},
			{fw(10, min), 10 * s, 1, denied(10, 0, 50*s, 50*s)},
			{fw(100, min), 0, 0, allowed(100, 90, 50*s)},
			{fw(100, min), 0, 90, allowed(100, 0, 50*s)},
			{fw(100, min), 50 * s, 0, allowed(100, 100, 0)},
		}},
		{"FixedWindow/Downgrade", []paramStep{
			{fw(100, min), 0, 58, allowed(100, 42, min)},
			{fw(10, min), 20 * s, 1, denied(10, 0, 40*s, 40*s)},
			{fw(10, min), 0, 0, denied(10, 0, 40*s, 40*s)},
			{fw(10, min), 40 * s, 1, allowed(10, 9, min)},
		}},
		{"FixedWindow/LongerWindow", []paramStep{
			{fw(10, min), 0, 4, allowed(10, 6, min)},
			{fw(10, 2*min), 30 * s, 1, allowed(10, 5, 90*s)}, // ends at its start + 2min
			{fw(10, 2*min), 60 * s, 5, allowed(10, 0, 30*s)},
			{fw(10, min), 10 * s, 0, allowed(10, 10, 0)}, // back to 1min: over at +60s
			{fw(10, 2*min), 0, 0, allowed(10, 10, 0)},    // and forgotten
		}},
		{"FixedWindow/ShorterWindow", []paramStep{
			{fw(10, min), 0, 4, allowed(10, 6, min)},
			{fw(10, 30*s), 20 * s, 1, allowed(10, 5, 10*s)},
			{fw(10, min), 5 * s, 0, allowed(10, 5, 35*s)}, // 1min again: the window keeps its start
			{fw(10, 30*s), 5 * s, 1, allowed(10, 9, 30*s)},
		}},
		{"FixedWindow/ShorterWindowAlreadyOver", []paramStep{
			{fw(10, min), 0, 4, allowed(10, 6, min)},
			{fw(10, 30*s), 40 * s, 0, allowed(10, 10, 0)},
			{fw(10, min), 0, 0, allowed(10, 10, 0)}, // the usage is gone for good
		}},
		{"FixedWindow/ClosedWindowStaysClosed", []paramStep{
			{fw(10, min), 0, 4, allowed(10, 6, min)},
			{fw(10, 2*min), 70 * s, 0, allowed(10, 10, 0)},
			{fw(10, 2*min), 0, 1, allowed(10, 9, 2*min)},
		}},
		{"FixedWindow/ClockBackAcrossChange", []paramStep{
			{fw(10, min), 0, 4, allowed(10, 6, min)},
			// The window would end at +2min, past now + 2min: it ends then.
			{fw(10, 2*min), -30 * s, 1, allowed(10, 5, 2*min)},
		}},

		{"SlidingLog/Upgrade", []paramStep{
			{sl(10, min), 0, 10, allowed(10, 0, min)},
			{sl(100, min), 10 * s, 0, allowed(100, 90, 50*s)},
			{sl(100, min), 0, 90, allowed(100, 0, min)},
			{sl(100, min), 0, 1, denied(100, 0, 50*s, min)},
		}},
		{"SlidingLog/Downgrade", []paramStep{
			{sl(100, min), 0, 58, allowed(100, 42, min)},
			{sl(10, min), 20 * s, 1, denied(10, 0, 40*s, 40*s)},
			{sl(10, min), 0, 0, denied(10, 0, 40*s, 40*s)},
			{sl(10, min), 40 * s, 1, allowed(10, 9, min)},
		}},
		{"SlidingLog/LongerWindow", []paramStep{
			{sl(10, min), 0, 4, allowed(10, 6, min)},
			{sl(10, min), 30 * s, 3, allowed(10, 3, min)},
			{sl(10, min), 35 * s, 0, allowed(10, 7, 25*s)}, // the 4 leave, and are dropped
			// Under 2min only the 3 still logged count, until +2m30s.
			{sl(10, 2*min), 5 * s, 0, allowed(10, 7, 80*s)},
			{sl(10, 2*min), 0, 7, allowed(10, 0, 2*min)},
			{sl(10, 2*min), 0, 1, denied(10, 0, 80*s, 2*min)},
			{sl(10, 2*min), 80 * s, 3, allowed(10, 0, 2*min)},
		}},
		{"SlidingLog/LongerWindowCountsUndropped", []paramStep{
			{sl(10, min), 0, 4, allowed(10, 6, min)},
			{sl(10, min), 30 * s, 3, allowed(10, 3, min)},
			// No call dropped the 4 once they left the 1min window: the
			// 2min window counts them.
			{sl(10, 2*min), 40 * s, 0, allowed(10, 3, 80*s)},
			{sl(10, 2*min), 0, 4, denied(10, 3, 50*s, 80*s)},
		}},
		{"SlidingLog/ShorterWindow", []paramStep{
			{sl(10, min), 0, 4, allowed(10, 6, min)},
			{sl(10, min), 40 * s, 3, allowed(10, 3, min)},
			{sl(10, 30*s), 10 * s, 1, allowed(10, 6, 30*s)}, // the 4 are past 30s
			{sl(10, min), 5 * s, 0, allowed(10, 6, 55*s)},   // and gone for good
		}},

		{"SlidingWindow/Upgrade", []paramStep{
			{sw(10, min), 0, 10, allowed(10, 0, 2*min)},
			{sw(100, min), 10 * s, 0, allowed(100, 90, 110*s)},
			{sw(100, min), 0, 90, allowed(100, 0, 110*s)},
		}},
		{"SlidingWindow/Downgrade", []paramStep{
			{sw(100, min), 0, 58, allowed(100, 42, 2*min)},
			// 58 in this window: the call fits in the next once
			// 58×(1-e/60s) rounds up to 9, at e = 50689656µs.
			{sw(10, min), 20 * s, 1, denied(10, 0, 40*s+50689656*us, 100*s)},
			{sw(10, min), 40*s + 50689656*us, 1, allowed(10, 0, 69310344*us)},
		}},
		{"SlidingWindow/MuchShorterWindow", []paramStep{
			{sw(100, time.Hour), 0, 1, allowed(100, 99, 2*time.Hour)},
			{sw(100, time.Hour), 30*min - s, 49, allowed(100, 50, 90*min+s)},
			// The 50 units a second old count in full under 1min, and
			// fade over it: 11 fit once 50 weighs 49, 1.2s on.
			{sw(60, min), s, 0, allowed(60, 10, min)},
			{sw(60, min), 0, 11, denied(60, 10, 1200*time.Millisecond, min)},
			{sw(60, min), 1200 * time.Millisecond, 11, allowed(60, 0, 2*min-1200*time.Millisecond)},
		}},
		{"SlidingWindow/LongerWindow", []paramStep{
			{sw(10, min), 0, 6, allowed(10, 4, 2*min)},
			// +90s: the 6 are the previous 1min window, and weigh 1/2.
			{sw(10, min), 90 * s, 0, allowed(10, 7, 30*s)},
			// Under 2min, the same grid: they weigh (2min-30s)/2min.
			{sw(10, 2*min), 0, 0, allowed(10, 5, 90*s)},
			{sw(10, 2*min), min, 0, allowed(10, 8, 30*s)},
		}},
		{"SlidingWindow/ShorterWindow", []paramStep{
			{sw(10, min), 0, 4, allowed(10, 6, 2*min)},
			{sw(10, min), 65 * s, 3, allowed(10, 3, 115*s)}, // 3 + ⌈4×55/60⌉
			// Under 30s, the same grid: 3 + ⌈4×20/30⌉.
			{sw(10, 30*s), 5 * s, 0, allowed(10, 4, 50*s)},
			{sw(10, min), 0, 0, allowed(10, 3, 110*s)}, // and back
			{sw(10, 30*s), 0, 0, allowed(10, 4, 50*s)},
			// +95s, on the 30s grid: the 3 are the previous window's.
			{sw(10, 30*s), 25 * s, 0, allowed(10, 7, 25*s)},
			{sw(10, 30*s), 15 * s, 0, allowed(10, 9, 10*s)}, // ⌈3×10/30⌉
			{sw(10, 30*s), 15 * s, 0, allowed(10, 10, 0)},
			{sw(10, min), 0, 0, allowed(10, 10, 0)}, // gone for good
		}},
		{"SlidingWindow/ShorterWindowRestartsGrid", []paramStep{
			{sw(10, min), 0, 4, allowed(10, 6, 2*min)},
			{sw(10, min), 65 * s, 3, allowed(10, 3, 115*s)},
			// +100s: 40s into the 1min window, past a 30s one: the 3 of
			// this window count in full, fading over 30s; the 4 before
			// are older than 30s, and dropped.
			{sw(10, 30*s), 35 * s, 0, allowed(10, 7, 30*s)},
			{sw(10, 30*s), 15 * s, 0, allowed(10, 8, 15*s)},
			{sw(10, 30*s), 15 * s, 0, allowed(10, 10, 0)},
		}},
		{"SlidingWindow/ClockBackAcrossChange", []paramStep{
			{sw(10, min), 0, 3, allowed(10, 7, 2*min)},
			{sw(10, min), 30 * s, 2, allowed(10, 5, 90*s)},
			// Before the grid's start: it starts now, keeping both counts.
			{sw(10, 10*s), -40 * s, 0, allowed(10, 5, 20*s)},
		}},
	}
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				clk := clock.NewFake(epoch)
				u := newKeyUser(t, b, clk)
				var at time.Duration
				for i, st := range tt.steps {
					clk.Advance(st.advance)
					at += st.advance
					got := u.call(st.alg, st.n, st.n == 0)
					if diff := cmp.Diff(st.want, got); diff != "" {
						t.Errorf("step %d: AllowN(%d) (0: Peek) with %+v at +%v = %+v, want %+v (-want +got)\n%s", i, st.n, st.alg, at, got, st.want, diff)
					}
				}
			})
		}
	})
}

// A key written by an earlier version, without the window length, reads
// as written with the current window, and is rewritten in the new form.
func TestParameterChangesReadOldStates(t *testing.T) {
	const s = time.Second
	at := func(d time.Duration) string { return strconv.FormatInt(epoch.Add(d).UnixMicro(), 10) }
	tests := []struct {
		alg       redislimit.Algorithm
		old       string
		want      redislimit.Result // of Allow over it
		rewritten string
	}{
		{redislimit.FixedWindow(10, time.Minute), at(30*s) + " 4", allowed(10, 5, 30*s), at(30*s) + " 5 60000000"},
		{redislimit.FixedWindow(100, time.Minute), at(30*s) + " 4", allowed(100, 95, 30*s), at(30*s) + " 5 60000000"},
		{redislimit.SlidingWindow(10, time.Minute), at(-10*s) + " 3 0", allowed(10, 6, 110*s), at(-10*s) + " 4 0 60000000"},
		{redislimit.SlidingWindow(10, time.Minute), at(-70*s) + " 3 0", allowed(10, 6, 110*s), at(-10*s) + " 1 3 60000000"},
	}
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		for i, tt := range tests {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				clk := clock.NewFake(epoch)
				lim, c := newLimiter(t, b, tt.alg, clk)
				rk := redislimit.RedisKey(lim, "u")
				if err := c.Set(ctx, rk, tt.old, time.Hour).Err(); err != nil {
					t.Fatal(err)
				}
				r, err := lim.Allow(ctx, "u")
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.want, r); diff != "" {
					t.Errorf("Allow over %q (-want +got):\n%s", tt.old, diff)
				}
				if v, err := c.Get(ctx, rk).Result(); err != nil || v != tt.rewritten {
					t.Errorf("after Allow over %q, the key holds %q, %v; want %q", tt.old, v, err, tt.rewritten)
				}
			})
		}
	})
}

// A sliding log's key lives until its newest entry leaves the window in
// force, even when a denied call or a peek finds it written under a shorter
// window; a fixed window's and a sliding window's key is rewritten with
// the TTL of its new end.
func TestParameterChangesExtendTTL(t *testing.T) {
	const s = time.Second
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		tests := []struct {
			short, long redislimit.Algorithm
			peekAfter   time.Duration // from the Allow under short
			wantTTL     time.Duration // at least, after the peek under long
		}{
			{redislimit.SlidingLog(5, time.Minute), redislimit.SlidingLog(1, time.Hour), 30 * s, time.Hour - 30*s},
			{redislimit.FixedWindow(5, time.Minute), redislimit.FixedWindow(1, time.Hour), 30 * s, time.Hour - 30*s},
			{redislimit.SlidingWindow(5, time.Minute), redislimit.SlidingWindow(1, time.Hour), 30 * s, 2*time.Hour - 30*s},
		}
		for _, tt := range tests {
			t.Run(tt.short.Name(), func(t *testing.T) {
				clk := clock.NewFake(epoch)
				c := b.Client(t)
				short := newRedisLimiter(t, c, tt.short, clk)
				long := newRedisLimiter(t, c, tt.long, clk)
				if r, err := short.AllowN(ctx, "u", 2); err != nil || !r.Allowed {
					t.Fatalf("AllowN(2) = %+v, %v", r, err)
				}
				clk.Advance(tt.peekAfter)
				if r, err := long.Peek(ctx, "u"); err != nil || r.Allowed {
					t.Fatalf("Peek with a longer window and a limit of 1 = %+v, %v; want denied", r, err)
				}
				rk := redislimit.RedisKey(long, "u")
				ttl, err := c.PTTL(ctx, rk).Result()
				if err != nil {
					t.Fatal(err)
				}
				if ttl < tt.wantTTL || ttl > tt.wantTTL+redislimit.TTLMargin+time.Second {
					t.Errorf("PTTL after the peek = %v, want from %v to %v more", ttl, tt.wantTTL, redislimit.TTLMargin+time.Second)
				}
			})
		}
	})
}

// switchBackends runs f on miniredis, on a real redis-server, and in
// process.
func switchBackends(t *testing.T, f func(t *testing.T, b limiterBackend)) {
	redistest.ForEach(t, func(t *testing.T, rb redistest.Backend) {
		f(t, limiterBackend{name: rb.Name, client: func(t *testing.T) redis.UniversalClient { return rb.Client(t) }})
	})
	t.Run("in-process", func(t *testing.T) { f(t, limiterBackend{name: "in-process"}) })
}

// admission is an admitted call: its time from the start and its cost.
type admission struct {
	at time.Duration
	n  int
}

// unitsIn returns the units admitted in [from, to).
func unitsIn(adm []admission, from, to time.Duration) int {
	units := 0
	for _, a := range adm {
		if a.at >= from && a.at < to {
			units += a.n
		}
	}
	return units
}

// changeTraffic makes random calls with before's parameters until change,
// then with after's until change + span, on a fresh key of u, and returns
// what was admitted before and after the change, the time of the last call
// before it, and the Results of peeks with before's and then after's
// parameters at the change.
func changeTraffic(u *keyUser, seed uint64, before, after redislimit.Algorithm, change, span time.Duration) (pre, post []admission, last time.Duration, peekBefore, peekAfter redislimit.Result) {
	rng := rand.New(rand.NewPCG(seed, 11))
	var at time.Duration
	changed := false
	for at < change+span {
		alg := before
		if at >= change {
			if !changed {
				// Peeks are calls too: the one with before's parameters
				// is the last before the change.
				peekBefore, peekAfter, last, changed = u.call(before, 0, true), u.call(after, 0, true), at, true
			}
			alg = after
		} else {
			last = at
		}
		n := 1 + rng.IntN(max(1, alg.Limit()/2))
		if r := u.call(alg, n, false); r.Allowed {
			if changed {
				post = append(post, admission{at, n})
			} else {
				pre = append(pre, admission{at, n})
			}
		}
		var adv time.Duration
		if rng.IntN(3) != 0 {
			adv = time.Duration(rng.IntN(1500)) * time.Millisecond
		}
		if at < change && at+adv > change {
			adv = change - at
		}
		u.clk.Advance(adv)
		at += adv
	}
	return pre, post, last, peekBefore, peekAfter
}

// The bounds each algorithm documents for a change of parameters hold over
// random traffic, in Redis as in process. After a change at +30s:
//   - A sliding log admits at most the new limit in any period of the new
//     window that starts at or after the change; in one that starts
//     before, at most the new limit less the units in it still logged at
//     the change (those admitted after the last call before it less the
//     old window).
//   - A sliding window's estimate at the change is at least the old one
//     when the window grows, and no window-long interval from the change
//     on admits 2×limit.
//   - A fixed window's window open at the change admits, with what it had
//     admitted, at most the new limit (or what it had admitted).
func TestParameterChangeBounds(t *testing.T) {
	const s = time.Second
	type change struct{ before, after redislimit.Algorithm }
	changes := []change{
		{redislimit.SlidingLog(10, 10*s), redislimit.SlidingLog(4, 20*s)},
		{redislimit.SlidingLog(4, 20*s), redislimit.SlidingLog(10, 5*s)},
		{redislimit.SlidingLog(6, 10*s), redislimit.SlidingLog(6, 30*s)},
		{redislimit.SlidingLog(6, 30*s), redislimit.SlidingLog(3, 30*s)},
		{redislimit.SlidingWindow(10, 10*s), redislimit.SlidingWindow(4, 20*s)},
		{redislimit.SlidingWindow(4, 20*s), redislimit.SlidingWindow(10, 5*s)},
		{redislimit.SlidingWindow(6, 7*s), redislimit.SlidingWindow(6, 30*s)},
		{redislimit.SlidingWindow(5, 30*s), redislimit.SlidingWindow(8, 20*s)},
		{redislimit.FixedWindow(10, 20*s), redislimit.FixedWindow(4, 40*s)},
		{redislimit.FixedWindow(4, 40*s), redislimit.FixedWindow(10, 25*s)},
		{redislimit.FixedWindow(6, 40*s), redislimit.FixedWindow(3, 40*s)},
	}
	const at = 30 * s
	switchBackends(t, func(t *testing.T, b limiterBackend) {
		for ci, ch := range changes {
			for seed := range uint64(4) {
				t.Run(fmt.Sprintf("%d/%d", ci, seed), func(t *testing.T) {
					u := newKeyUser(t, b, clock.NewFake(epoch))
					w0, w1 := ch.before.(interface{ Window() time.Duration }).Window(), ch.after.(interface{ Window() time.Duration }).Window()
					l0, l1 := ch.before.Limit(), ch.after.Limit()
					pre, post, last, pb, pa := changeTraffic(u, seed, ch.before, ch.after, at, 4*w1)
					switch ch.before.Name() {
					case "sl":
						for _, a := range post {
							if got := unitsIn(post, a.at, a.at+w1); got > l1 {
								t.Errorf("%d units admitted in the %v from +%v, want at most %d", got, w1, a.at, l1)
							}
						}
						for _, a := range pre {
							logged := unitsIn(pre, max(a.at, last-w0+1), at)
							if got := unitsIn(post, at, a.at+w1); got > 0 && got+logged > l1 {
								t.Errorf("%d units admitted from the change to +%v, with %d still logged from +%v: want at most %d", got, a.at+w1, logged, a.at, l1)
							}
						}
					case "sw":
						// Remaining is limit - estimate, at least 0: the old
						// estimate is at least l0 - Remaining.
						if want := max(l1-(l0-pb.Remaining), 0); w1 >= w0 && pa.Remaining > want {
							t.Errorf("Remaining at the change %d under the old parameters, %d under a longer window, want at most %d: the estimate fell", pb.Remaining, pa.Remaining, want)
						}
						for _, a := range post {
							if got := unitsIn(post, a.at, a.at+w1); got > 2*l1-1 {
								t.Errorf("%d units admitted in the %v from +%v, want at most %d", got, w1, a.at, 2*l1-1)
							}
						}
					case "fw":
						if pb.ResetAfter == 0 {
							break // no window open at the change
						}
						used := l0 - pb.Remaining
						end := at + pb.ResetAfter - w0 + w1
						if end > at && pa.Remaining != max(l1-used, 0) {
							t.Errorf("Remaining at the change = %d with %d used, want %d", pa.Remaining, used, max(l1-used, 0))
						}
						if got := unitsIn(post, at, end); got > max(l1-used, 0) {
							t.Errorf("%d units admitted in the window open at the change (%d used, until +%v), want at most %d", got, used, end, max(l1-used, 0))
						}
					}
					if len(post) == 0 {
						t.Errorf("nothing admitted after the change: the traffic proves nothing")
					}
				})
			}
		}
	})
}

// Over random calls whose parameters change often, and with a clock that
// sometimes goes back after an admitted call, the in-process states, carried over as the scripts
// read a key written under other parameters, give the Results that the
// scripts give. (Neither side drops a key here: see keyUser.)
func TestLocalMatchesScriptsAcrossChanges(t *testing.T) {
	const s = time.Second
	kinds := [][]redislimit.Algorithm{
		{redislimit.FixedWindow(7, 10*s), redislimit.FixedWindow(3, 4*s), redislimit.FixedWindow(12, 25*s)},
		{redislimit.SlidingLog(7, 10*s), redislimit.SlidingLog(3, 4*s), redislimit.SlidingLog(12, 25*s)},
		{redislimit.SlidingWindow(7, 10*s), redislimit.SlidingWindow(3, 4*s), redislimit.SlidingWindow(12, 25*s), redislimit.SlidingWindow(5, 7*s)},
	}
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		for ki, algs := range kinds {
			t.Run(algs[0].Name(), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(ki), 5))
				clk := clock.NewFake(epoch)
				remote := newKeyUser(t, limiterBackend{client: func(t *testing.T) redis.UniversalClient { return b.Client(t) }}, clk)
				local := newKeyUser(t, limiterBackend{}, clk)
				alg := algs[0]
				var at time.Duration
				lastAdmitted := false
				for i := 0; i < 600; i++ {
					if rng.IntN(4) == 0 {
						alg = algs[rng.IntN(len(algs))]
					}
					var adv time.Duration
					switch rng.IntN(5) {
					case 4:
						// Back, but only right after a write on both
						// sides: a state left as it was on one side and
						// moved on on the other, once its time passed,
						// would show again.
						if lastAdmitted {
							adv = -time.Duration(rng.IntN(10000)) * time.Millisecond
						}
					case 0:
					case 1:
						adv = time.Duration(rng.IntN(4)) * s
					case 2:
						adv = time.Duration(rng.IntN(20000)) * time.Millisecond
					default:
						adv = time.Duration(rng.Int64N(int64(3*s/time.Microsecond))) * time.Microsecond
					}
					clk.Advance(adv)
					at += adv
					n, peek := 1+rng.IntN(alg.Limit()), rng.IntN(5) == 0
					want := remote.call(alg, n, peek)
					got := local.call(alg, n, peek)
					if diff := cmp.Diff(want, got); diff != "" {
						t.Fatalf("step %d at +%v: peek=%v AllowN(%d) with %+v: local differs from Redis (-redis +local):\n%s", i, at, peek, n, alg, diff)
					}
					lastAdmitted = want.Allowed && !peek
				}
			})
		}
	})
}

// A key used alternately with two windows, as by limiters of two
// configurations during a rollout, keeps admitting under steady traffic,
// and is full again two of the longer windows after the traffic stops,
// though every call in between changes its window.
func TestAlternatingWindowsNeitherStickNorDrift(t *testing.T) {
	const s = time.Second
	pairs := [][2]redislimit.Algorithm{
		{redislimit.FixedWindow(5, 10*s), redislimit.FixedWindow(5, 20*s)},
		{redislimit.SlidingLog(5, 10*s), redislimit.SlidingLog(5, 20*s)},
		{redislimit.SlidingWindow(5, 10*s), redislimit.SlidingWindow(5, 20*s)},
	}
	switchBackends(t, func(t *testing.T, b limiterBackend) {
		for _, p := range pairs {
			t.Run(p[0].Name(), func(t *testing.T) {
				clk := clock.NewFake(epoch)
				u := newKeyUser(t, b, clk)
				const gap, span = 250 * time.Millisecond, 2 * time.Minute
				admitted := 0
				for i := 0; time.Duration(i)*gap < span; i++ {
					if u.call(p[i%2], 1, false).Allowed {
						admitted++
					}
					clk.Advance(gap)
				}
				// At least the limit per longer window.
				if least := 5 * int(span/(20*s)); admitted < least {
					t.Errorf("admitted %d in %v of steady traffic, want at least %d", admitted, span, least)
				}
				for i := 0; time.Duration(i)*gap <= 40*s; i++ {
					u.call(p[i%2], 0, true)
					clk.Advance(gap)
				}
				for _, alg := range p {
					if r := u.call(alg, 0, true); r.Remaining != 5 || r.ResetAfter != 0 {
						t.Errorf("Peek with %+v two windows after the traffic stopped = %+v, want full", alg, r)
					}
				}
			})
		}
	})
}
