package redislimit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/clock"
)

// observations collects what an Observer receives.
type observations struct {
	mu   sync.Mutex
	list []redislimit.Observation
}

func (o *observations) observe(_ context.Context, ob redislimit.Observation) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ob.Latency <= 0 {
		ob.Algorithm += " (no latency)"
	}
	o.list = append(o.list, ob)
}

func (o *observations) take() []redislimit.Observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	l := o.list
	o.list = nil
	return l
}

var ignoreLatency = cmpopts.IgnoreFields(redislimit.Observation{}, "Latency")

func TestObserver(t *testing.T) {
	ctx := context.Background()
	obs := &observations{}
	c, _ := countedServer(t)
	clk := clock.NewFake(epoch)
	lim := newRedisLimiter(t, c, redislimit.FixedWindow(2, time.Hour), clk, redislimit.WithObserver(obs.observe), redislimit.WithDenyCache(10))
	for i := 0; i < 4; i++ {
		_, _ = lim.Allow(ctx, "k")
	}
	_, _ = lim.AllowN(ctx, "", 1)
	_, _ = lim.AllowMany(ctx, []string{"k", "other"})
	fw := func(o redislimit.Outcome, allowed bool, rt int, hit bool) redislimit.Observation {
		return redislimit.Observation{Algorithm: "fw", Outcome: o, Allowed: allowed, RoundTrips: rt, DenyCacheHit: hit}
	}
	want := []redislimit.Observation{
		fw(redislimit.Allowed, true, 1, false),
		fw(redislimit.Allowed, true, 1, false),
		fw(redislimit.Denied, false, 1, false),
		fw(redislimit.Denied, false, 0, true),  // the deny cache
		fw(redislimit.Failed, false, 0, false), // bad input
		fw(redislimit.Denied, false, 0, true),
		fw(redislimit.Allowed, true, 1, false),
	}
	if diff := cmp.Diff(want, obs.take(), ignoreLatency); diff != "" {
		t.Errorf("observations (-want +got):\n%s", diff)
	}

	down := redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1})
	defer down.Close()
	for _, tc := range []struct {
		policy redislimit.FailurePolicy
		want   redislimit.Observation
	}{
		{redislimit.FailOpen, redislimit.Observation{Algorithm: "tb", Outcome: redislimit.Degraded, Allowed: true, RoundTrips: 1}},
		{redislimit.FailError, redislimit.Observation{Algorithm: "tb", Outcome: redislimit.Failed, RoundTrips: 1}},
	} {
		lim := newRedisLimiter(t, down, redislimit.TokenBucket(1, time.Second, 1), nil, redislimit.WithObserver(obs.observe),
			redislimit.WithFailurePolicy(tc.policy), redislimit.WithTimeout(time.Second))
		_, _ = lim.Allow(ctx, "k")
		if diff := cmp.Diff([]redislimit.Observation{tc.want}, obs.take(), ignoreLatency); diff != "" {
			t.Errorf("%v with Redis down (-want +got):\n%s", tc.policy, diff)
		}
	}

	local, err := redislimit.NewLocal(redislimit.All(redislimit.FixedWindow(1, time.Hour)), redislimit.WithObserver(obs.observe))
	if err != nil {
		t.Fatal(err)
	}
	_ = local.Wait(ctx, "k")
	_, _ = local.Peek(ctx, "k")
	want = []redislimit.Observation{
		{Algorithm: "all", Outcome: redislimit.Allowed, Allowed: true},
		{Algorithm: "all", Outcome: redislimit.Denied},
	}
	if diff := cmp.Diff(want, obs.take(), ignoreLatency); diff != "" {
		t.Errorf("in process (-want +got):\n%s", diff)
	}
	for _, o := range []redislimit.Outcome{redislimit.Allowed, redislimit.Denied, redislimit.Degraded, redislimit.Failed} {
		if o.String() == "unknown" {
			t.Errorf("outcome %d has no name", o)
		}
	}
}
