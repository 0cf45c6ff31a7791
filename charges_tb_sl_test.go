package redislimit_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// chargeStep is one call in a test of a key whose parameters change: move
// the clock by Advance, then make the call Op with N through the limiter
// of the test's algorithm Alg, and expect Want.
type chargeStep struct {
	Advance time.Duration
	Alg     int
	Op      algtest.Op
	N       int
	Want    redislimit.Result
}

// A token bucket's debt belongs to its burst and interval: other
// parameters read the tokens in use, capped at their burst, as for any
// change, and remember the rest behind them.
func TestTokenBucketDebtAcrossParameters(t *testing.T) {
	s, ms := time.Second, time.Millisecond
	tb := redislimit.TokenBucket
	algs := []redislimit.Algorithm{tb(10, time.Minute, 10), tb(100, time.Minute, 100), tb(10, time.Minute, 20)}
	steps := []chargeStep{
		// 30 tokens of 6s: 20 past the burst.
		{0, 0, algtest.OpDebit, 30, denied(10, 0, 2*time.Minute+6*s, 3*time.Minute)},
		// The same interval, a burst of 20: the 30 in use, capped at 20.
		{0, 2, algtest.OpPeek, 0, denied(20, 0, 6*s, 2*time.Minute)},
		// Back to the burst of 10: capped at it, the rest remembered.
		{0, 0, algtest.OpPeek, 0, denied(10, 0, 6*s, time.Minute)},
		// Another interval: the 30 in use at 0.6s each.
		{0, 1, algtest.OpPeek, 0, allowed(100, 70, 18*s)},
		{0, 1, algtest.OpDebit, 100, denied(100, 0, 18600*ms, 78*s)},
		{18600 * ms, 1, algtest.OpAllow, 1, allowed(100, 0, time.Minute)},
		{0, 1, algtest.OpRefund, 200, allowed(100, 100, 0)},
	}
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		ctx := context.Background()
		clk := clock.NewFake(epoch)
		first, _ := b.newLimiter(t, algs[0], clk)
		lims := []*redislimit.Limiter{first}
		for _, alg := range algs[1:] {
			lims = append(lims, using(t, first, alg))
		}
		var elapsed time.Duration
		for i, st := range steps {
			clk.Advance(st.Advance)
			elapsed += st.Advance
			got, err := callOp(ctx, lims[st.Alg], st.Op, "user", st.N)
			if err != nil {
				t.Fatalf("step %d at +%v: %v", i, elapsed, err)
			}
			if diff := cmp.Diff(st.Want, got); diff != "" {
				t.Errorf("step %d: bucket %d, %v(%d) at +%v = %+v, want %+v (-want +got)\n%s", i, st.Alg, st.Op, st.N, elapsed, got, st.Want, diff)
			}
		}
	})
}

// The script and the in-process state agree over random calls, debits
// and refunds on two keys whose parameters switch among token buckets,
// fractional intervals and a shared interval among them; as in
// TestTokenBucketChangesMatchLocal, times stay on a one-second grid and
// only move forward.
func TestTokenBucketChargesMatchLocal(t *testing.T) {
	tb := redislimit.TokenBucket
	s := time.Second
	algs := []redislimit.Algorithm{tb(3, 7*s, 4), tb(1, 2*s, 7), tb(5, 3*s, 3), tb(3, 7*s, 6), tb(70000, s, 9)}
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		for seed := range uint64(4) {
			t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 11))
				clk := clock.NewFake(epoch)
				c := b.Client(t)
				remote := []*redislimit.Limiter{newRedisLimiter(t, c, algs[0], clk)}
				first, err := redislimit.NewLocal(algs[0], redislimit.WithClock(clk.Now))
				if err != nil {
					t.Fatal(err)
				}
				local := []*redislimit.Limiter{first}
				for _, alg := range algs[1:] {
					remote = append(remote, using(t, remote[0], alg))
					local = append(local, using(t, first, alg))
				}
				ctx := context.Background()
				ai := 0
				for i := 0; i < 300; i++ {
					if rng.IntN(2) == 0 {
						clk.Advance(time.Duration(rng.IntN(4)) * s)
					}
					if rng.IntN(3) == 0 {
						ai = rng.IntN(len(algs))
					}
					key := "k" + strconv.Itoa(rng.IntN(2))
					limit := algs[ai].Limit()
					n, op := 1+rng.IntN(limit), algtest.OpAllow
					switch rng.IntN(10) {
					case 0:
						op = algtest.OpPeek
					case 1, 2:
						op, n = algtest.OpDebit, 1+rng.IntN(3*limit)
					case 3:
						op, n = algtest.OpDebit, redislimit.MaxDebit
					case 4, 5:
						op, n = algtest.OpRefund, 1+rng.IntN(2*limit)
					}
					want, werr := callOp(ctx, remote[ai], op, key, n)
					got, gerr := callOp(ctx, local[ai], op, key, n)
					if werr != nil || gerr != nil {
						t.Fatalf("step %d: errors %v (Redis), %v (local)", i, werr, gerr)
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Fatalf("step %d: bucket %d, key %s, %v(%d): local differs from Redis (-redis +local):\n%s", i, ai, key, op, n, diff)
					}
				}
			})
		}
	})
}

// Debits of 2^50 on a burst of 2^50 overflow nothing: the first empties
// the bucket, the second owes it all again, the key keeps a TTL that
// outlives the debt, and refunds bring the bucket back to full, never
// above. At the fastest rate an interval is under 2^-25 µs, and the debt
// of 2^50 tokens lasts some 17 seconds.
func TestTokenBucketDebitLargeBurst(t *testing.T) {
	tb := redislimit.TokenBucket
	tests := []struct {
		alg redislimit.Algorithm
		// retry is RetryAfter of a bucket just emptied: an interval,
		// rounded up to a whole µs.
		retry time.Duration
	}{
		{tb(1<<50, time.Hour, 1<<50), time.Microsecond},
		{tb(1<<50, time.Millisecond, 1<<50), time.Microsecond},
		// A full refill takes MaxWindow: the second debit finds the TAT
		// at its cap already.
		{tb(1<<40, redislimit.MaxWindow, 1<<40), 287 * time.Microsecond},
	}
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		ctx := context.Background()
		for i, tt := range tests {
			alg := tt.alg
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				clk := clock.NewFake(epoch)
				lim, c := b.newLimiter(t, alg, clk)
				full := alg.(interface{ Window() time.Duration }).Window()
				r, err := lim.Debit(ctx, "u", redislimit.MaxDebit)
				if err != nil {
					t.Fatal(err)
				}
				if want := denied(alg.Limit(), 0, tt.retry, full); !cmp.Equal(r, want) {
					t.Fatalf("first Debit(2^50) = %+v, want %+v", r, want)
				}
				r, err = lim.Debit(ctx, "u", redislimit.MaxDebit)
				if err != nil {
					t.Fatal(err)
				}
				wantReset := min(2*full, redislimit.MaxWindow)
				if r.Allowed || r.Remaining != 0 || r.ResetAfter < wantReset-time.Microsecond || r.ResetAfter > wantReset ||
					r.RetryAfter < wantReset-full || r.RetryAfter > redislimit.MaxWindow {
					t.Fatalf("second Debit(2^50) = %+v, want a denial with ResetAfter about %v, within MaxWindow", r, wantReset)
				}
				if c != nil {
					ttl, err := c.PTTL(ctx, redislimit.RedisKey(lim, "u")).Result()
					if err != nil || ttl < r.ResetAfter {
						t.Errorf("PTTL after the debits = %v, %v; want at least ResetAfter %v", ttl, err, r.ResetAfter)
					}
				}
				clk.Advance(r.RetryAfter)
				if r, err := lim.Allow(ctx, "u"); err != nil || !r.Allowed {
					t.Errorf("Allow once the debt has refilled = %+v, %v; want it allowed", r, err)
				}
				for range 3 {
					if _, err := lim.Refund(ctx, "u", redislimit.MaxDebit); err != nil {
						t.Fatal(err)
					}
				}
				if r, err := lim.Peek(ctx, "u"); err != nil || !cmp.Equal(r, allowed(alg.Limit(), alg.Limit(), 0)) {
					t.Errorf("Peek after the refunds = %+v, %v; want a full bucket", r, err)
				}
			})
		}
	})
}

// A debt is marked in the key, as six numbers with the burst negative,
// and a call that finds it repaid writes the key without the mark, so
// that a clock going back finds a bucket capped at a full refill again.
func TestTokenBucketDebtMark(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		clk := clock.NewFake(epoch)
		lim, c := newLimiter(t, b, redislimit.TokenBucket(1, time.Second, 2), clk)
		rk := redislimit.RedisKey(lim, "u")
		if _, err := lim.Debit(ctx, "u", 5); err != nil {
			t.Fatal(err)
		}
		v, err := c.Get(ctx, rk).Result()
		if f := strings.Fields(v); err != nil || len(f) != 6 || f[5] != "-2" {
			t.Fatalf("state in debt = %q, %v; want six numbers, the last -2", v, err)
		}
		clk.Advance(3 * time.Second)
		if r, err := lim.Peek(ctx, "u"); err != nil || !cmp.Equal(r, denied(2, 0, time.Second, 2*time.Second)) {
			t.Fatalf("Peek once repaid = %+v, %v", r, err)
		}
		v, err = c.Get(ctx, rk).Result()
		if f := strings.Fields(v); err != nil || len(f) != 4 {
			t.Fatalf("state once repaid = %q, %v; want four numbers", v, err)
		}
		clk.Advance(-time.Hour)
		if r, err := lim.Peek(ctx, "u"); err != nil || !cmp.Equal(r, denied(2, 0, time.Second, 2*time.Second)) {
			t.Errorf("Peek with the clock an hour back = %+v, %v; want the bucket empty, no more", r, err)
		}
	})
}

// A sliding log in debt holds at most 2×limit entries, however much is
// debited, and agrees with the in-process log; the key keeps a TTL, and a
// refund of everything deletes it.
func TestSlidingLogDebitKeepsTwiceLimit(t *testing.T) {
	const limit = 5
	alg := redislimit.SlidingLog(limit, time.Minute)
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		clk := clock.NewFake(epoch)
		lim, c := newLimiter(t, b, alg, clk)
		local, err := redislimit.NewLocal(alg, redislimit.WithClock(clk.Now))
		if err != nil {
			t.Fatal(err)
		}
		rk := redislimit.RedisKey(lim, "u")
		rng := rand.New(rand.NewPCG(3, 4))
		for i := range 40 {
			clk.Advance(time.Duration(rng.IntN(3)) * time.Second)
			op, n := algtest.OpDebit, 1+rng.IntN(20)
			switch {
			case i%10 == 9:
				n = redislimit.MaxDebit
			case i%4 == 3:
				op, n = algtest.OpRefund, 1+rng.IntN(2*limit)
			}
			want, err := callOp(ctx, lim, op, "u", n)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := callOp(ctx, local, op, "u", n); !cmp.Equal(want, got) {
				t.Fatalf("step %d: %v(%d) = %+v in Redis, %+v in process", i, op, n, want, got)
			}
			card, err := c.ZCard(ctx, rk).Result()
			if err != nil || card > 2*limit {
				t.Fatalf("step %d: ZCARD after %v(%d) = %d, %v; want at most %d", i, op, n, card, err, 2*limit)
			}
			if card > 0 {
				if ttl, err := c.PTTL(ctx, rk).Result(); err != nil || ttl <= 0 {
					t.Fatalf("step %d: PTTL = %v, %v; want one", i, ttl, err)
				}
			}
		}
		if _, err := lim.Refund(ctx, "u", 2*limit); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Exists(ctx, rk).Result(); err != nil || n != 0 {
			t.Errorf("EXISTS after a refund of everything = %d, %v; want 0", n, err)
		}
	})
}

// A debt at the fastest rate, where MaxWindow holds more tokens than a
// double counts exactly, passes to another interval, and one passes to
// it, in bounded time: at most 2^50 tokens are taken over, and the
// script and the in-process state agree.
func TestTokenBucketFastestRateChanges(t *testing.T) {
	tb := redislimit.TokenBucket
	fast, slow := tb(1<<50, time.Millisecond, 1<<50), tb(1, time.Second, 1000)
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		clk := clock.NewFake(epoch)
		// A short timeout: a script that never settles fails the test.
		remote, _ := newLimiter(t, b, fast, clk, redislimit.WithTimeout(10*time.Second))
		local, err := redislimit.NewLocal(fast, redislimit.WithClock(clk.Now))
		if err != nil {
			t.Fatal(err)
		}
		lims := [][2]*redislimit.Limiter{{remote, local}, {using(t, remote, slow), using(t, local, slow)}}
		steps := []struct {
			lim int
			op  algtest.Op
			n   int
		}{
			// 9 debits of 2^50: over 2^53 tokens, some 150s.
			{0, algtest.OpDebit, redislimit.MaxDebit}, {0, algtest.OpDebit, redislimit.MaxDebit},
			{0, algtest.OpDebit, redislimit.MaxDebit}, {0, algtest.OpDebit, redislimit.MaxDebit},
			{0, algtest.OpDebit, redislimit.MaxDebit}, {0, algtest.OpDebit, redislimit.MaxDebit},
			{0, algtest.OpDebit, redislimit.MaxDebit}, {0, algtest.OpDebit, redislimit.MaxDebit},
			{0, algtest.OpDebit, redislimit.MaxDebit},
			{1, algtest.OpPeek, 0},
			{1, algtest.OpDebit, 5000},
			{0, algtest.OpPeek, 0},
			{0, algtest.OpRefund, redislimit.MaxDebit},
			{1, algtest.OpAllow, 1},
		}
		for i, st := range steps {
			want, werr := callOp(ctx, lims[st.lim][0], st.op, "u", st.n)
			got, gerr := callOp(ctx, lims[st.lim][1], st.op, "u", st.n)
			if werr != nil || gerr != nil {
				t.Fatalf("step %d: %v(%d): errors %v (Redis), %v (local)", i, st.op, st.n, werr, gerr)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("step %d: %v(%d) on bucket %d: local differs from Redis (-redis +local):\n%s", i, st.op, st.n, st.lim, diff)
			}
			if want.RetryAfter > redislimit.MaxWindow || want.ResetAfter > redislimit.MaxWindow {
				t.Errorf("step %d: %v(%d) = %+v, durations past MaxWindow", i, st.op, st.n, want)
			}
		}
	})
}
