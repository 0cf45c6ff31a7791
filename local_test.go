package redislimit_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// The in-process limiter gives the Results the scripts give, step for
// step, over random sequences of costs, peeks, debits, refunds and clock
// moves. Times stay
// on a one-second grid so that no Redis TTL (real time) ends while the fake
// clock stands still. The clock only moves forward here: Redis keeps a key
// until its TTL passes in real time, so a fake clock that jumps past a
// key's expiry and back would find it in Redis but not in memory, a case
// the real clock never produces. TestConformance covers time going back.
func TestLocalMatchesScripts(t *testing.T) {
	s := time.Second
	// Every row's random configurations, numbered across rows.
	var algs []redislimit.Algorithm
	for _, row := range algtest.Rows {
		if row.Local {
			algs = append(algs, row.Random...)
		}
	}
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		for ai, alg := range algs {
			t.Run(alg.Name()+strconv.Itoa(ai), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(ai), 42))
				clk := clock.NewFake(epoch)
				remote, _ := newLimiter(t, b, alg, clk)
				local, err := redislimit.NewLocal(alg, redislimit.WithClock(clk.Now))
				if err != nil {
					t.Fatal(err)
				}
				ctx := context.Background()
				var at time.Duration
				for i := 0; i < 150; i++ {
					var adv time.Duration
					if rng.IntN(2) == 0 {
						adv = time.Duration(rng.IntN(4)) * s
					}
					clk.Advance(adv)
					at += adv
					key := "k" + strconv.Itoa(rng.IntN(2))
					n, op := 1+rng.IntN(alg.Limit()), algtest.OpAllow
					switch rng.IntN(10) {
					case 0, 1:
						op = algtest.OpPeek
					case 2:
						op, n = algtest.OpDebit, 1+rng.IntN(2*alg.Limit())
					case 3:
						op, n = algtest.OpRefund, 1+rng.IntN(2*alg.Limit())
					}
					want, werr := callOp(ctx, remote, op, key, n)
					got, gerr := callOp(ctx, local, op, key, n)
					if werr != nil || gerr != nil {
						t.Fatalf("step %d: errors %v (Redis), %v (local)", i, werr, gerr)
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Fatalf("step %d at %+v: %v(%q, %d): local differs from Redis (-redis +local):\n%s", i, at, op, key, n, diff)
					}
				}
			})
		}
	})
}

// The in-process limiter keeps at most MaxLocalKeys keys, keeps nothing for
// a peek at a fresh key, and sweeps expired keys as new ones arrive.
func TestLocalKeysAreBounded(t *testing.T) {
	clk := clock.NewFake(epoch)
	lim, err := redislimit.NewLocal(redislimit.FixedWindow(1, time.Second), redislimit.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := lim.Peek(ctx, "fresh"); err != nil {
		t.Fatal(err)
	}
	if n := redislimit.LocalKeys(lim); n != 0 {
		t.Fatalf("a peek at a fresh key kept %d keys", n)
	}
	total := redislimit.MaxLocalKeys + redislimit.MaxLocalKeys/4
	for i := 0; i < total; i++ {
		if r, err := lim.Allow(ctx, "k"+strconv.Itoa(i)); err != nil || !r.Allowed {
			t.Fatalf("Allow #%d = %+v, %v", i, r, err)
		}
	}
	if n := redislimit.LocalKeys(lim); n > redislimit.MaxLocalKeys || n < redislimit.MaxLocalKeys*9/10 {
		t.Errorf("%d keys kept after %d live keys, want at most %d and close to it", n, total, redislimit.MaxLocalKeys)
	}
	clk.Advance(2 * time.Second) // every window has ended
	const fresh = 2000
	for i := 0; i < fresh; i++ {
		if _, err := lim.Allow(ctx, "new"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := redislimit.LocalKeys(lim); n != fresh {
		t.Errorf("%d keys kept after the old ones expired and %d new arrived, want %d", n, fresh, fresh)
	}
}

// WithLocalInstances divides a token bucket's burst and its refill rate.
func TestLocalInstancesDivideRate(t *testing.T) {
	clk := clock.NewFake(epoch)
	lim, err := redislimit.NewLocal(redislimit.TokenBucket(10, time.Second, 10), redislimit.WithClock(clk.Now), redislimit.WithLocalInstances(2))
	if err != nil {
		t.Fatal(err)
	}
	runSteps(t, lim, clk, "k", []step{
		{N: 5, Want: allowed(5, 0, time.Second)},
		{N: 1, Want: denied(5, 0, 200*time.Millisecond, time.Second)}, // 5 per second locally
		{Advance: 200 * time.Millisecond, N: 1, Want: allowed(5, 0, time.Second)},
		{Advance: time.Second, Peek: true, Want: allowed(5, 5, 0)},
	})
	if _, err := lim.AllowN(context.Background(), "k", 6); err == nil {
		t.Error("AllowN above the divided capacity: nil error, want ErrCostExceedsLimit")
	}
}
