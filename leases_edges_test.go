package redislimit_test

import (
	"context"
	"errors"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// Edges of leases: where a give-back or a lease could land in state it
// did not come from.

// drainKey calls Allow on key until a denial and returns how many calls
// it admitted.
func drainKey(t *testing.T, lim *redislimit.Limiter, key string) int {
	t.Helper()
	for n := 0; ; n++ {
		r, err := lim.Allow(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Allowed {
			return n
		}
	}
}

// A token bucket's lease whose units would have refilled is not given
// back: the refund would free tokens that another process took from the
// full bucket since, and the bucket would admit more than its burst at
// one instant.
func TestLeasesTokenBucketGiveBackAfterRefill(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	clk := clock.NewFake(epoch)
	const burst = 1000
	alg := redislimit.TokenBucket(burst, time.Second, burst)
	leasing := newRedisLimiter(t, c, alg, clk, redislimit.WithLeases(100, time.Hour))
	other := newRedisLimiter(t, c, alg, clk)
	heat(t, leasing, clk, "k")
	// Long enough for the bucket to be full again, lease units included.
	clk.Advance(2 * time.Second)
	first := drainKey(t, other, "k")
	if err := leasing.ReturnLeases(context.Background()); err != nil {
		t.Fatal(err)
	}
	more := drainKey(t, other, "k")
	t.Logf("at one instant: %d admitted from a full bucket, %d more after ReturnLeases", first, more)
	if first+more > burst {
		t.Errorf("admitted %d at one instant, above the burst of %d", first+more, burst)
	}
}

// After another process resets a key, a lease taken from the state that
// Reset deleted may give its units back into the key's new state, as
// documented on Reset: at most the lease's unused units (100), once.
func TestLeasesOtherProcessResetBound(t *testing.T) {
	for _, row := range []struct {
		name string
		alg  redislimit.Algorithm
	}{
		{"FixedWindow", redislimit.FixedWindow(1000, time.Hour)},
		{"TokenBucket", redislimit.TokenBucket(1000, 24*time.Hour, 1000)},
	} {
		t.Run(row.name, func(t *testing.T) {
			c := redistest.NewClient(t, redistest.Start(t).Addr())
			clk := clock.NewFake(epoch)
			leasing := newRedisLimiter(t, c, row.alg, clk, redislimit.WithLeases(100, time.Hour))
			other := newRedisLimiter(t, c, row.alg, clk)
			heat(t, leasing, clk, "k")
			ctx := context.Background()
			if err := other.Reset(ctx, "k"); err != nil {
				t.Fatal(err)
			}
			first := drainKey(t, other, "k")
			if err := leasing.ReturnLeases(ctx); err != nil {
				t.Fatal(err)
			}
			more := drainKey(t, other, "k")
			t.Logf("after Reset: %d admitted, %d more after the other process's ReturnLeases", first, more)
			if first != 1000 || first+more > 1000+100 {
				t.Errorf("admitted %d after Reset and %d more, want 1000 and at most the lease's 100", first, more)
			}
		})
	}
}

// leaseMode matches the mode argument of a lease request.
var leaseMode = regexp.MustCompile(`^l[0-9]+$`)

// leaseGate is a go-redis hook that, once armed, holds the reply to the
// next lease request until release is closed, and closes entered when it
// has it.
type leaseGate struct {
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func newLeaseGate() *leaseGate {
	return &leaseGate{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *leaseGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *leaseGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if isLeaseRequest(cmd) && g.armed.CompareAndSwap(true, false) {
			close(g.entered)
			<-g.release
		}
		return err
	}
}

func (g *leaseGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func isLeaseRequest(cmd redis.Cmder) bool {
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && leaseMode.MatchString(s) {
			return true
		}
	}
	return false
}

// Reset drops a lease request in flight: its units may come from the
// state that Reset deletes, and must not be admitted on top of the new
// state's capacity.
func TestLeasesResetDuringLeaseRequest(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	gate := newLeaseGate()
	c.AddHook(gate)
	clk := clock.NewFake(epoch)
	const limit = 1000
	// Every call alone, so that Reset does not queue behind the request
	// held at the gate.
	lim := newRedisLimiter(t, c, redislimit.FixedWindow(limit, time.Hour), clk,
		redislimit.WithLeases(100, time.Hour), redislimit.WithBatchSize(1))
	heat(t, lim, clk, "k")
	ctx := context.Background()
	gate.armed.Store(true)
	var admitted atomic.Int64
	done := make(chan error, 1)
	go func() {
		for {
			r, err := lim.Allow(ctx, "k")
			if err != nil || !r.Allowed {
				done <- err
				return
			}
			admitted.Add(1)
		}
	}()
	select {
	case <-gate.entered:
	case err := <-done:
		t.Fatalf("the caller stopped before a lease request: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no lease request")
	}
	// The caller waits for the request held at the gate.
	before := admitted.Load()
	if err := lim.Reset(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	close(gate.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	after := admitted.Load() - before
	t.Logf("%d admitted after Reset", after)
	if after > limit {
		t.Errorf("admitted %d after Reset, above the limit of %d", after, limit)
	}
}

// A lease of All(FixedWindow, SlidingLog) ends with the fixed window it
// was taken in, though the sliding log cannot give units back: else it
// would admit, in the next window, units consumed in the one before.
func TestLeasesAllEndsWithShortestPart(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	clk := clock.NewFake(epoch)
	const limit = 1000
	alg := redislimit.All(redislimit.FixedWindow(limit, time.Second), redislimit.SlidingLog(100_000, time.Millisecond*10))
	leasing := newRedisLimiter(t, c, alg, clk, redislimit.WithLeases(100, time.Hour))
	other := newRedisLimiter(t, c, alg, clk)
	heat(t, leasing, clk, "k")
	// The fixed window the lease was taken in is over.
	clk.Advance(time.Second)
	first := drainKey(t, other, "k")
	more := 0
	for {
		r, err := leasing.Allow(context.Background(), "k")
		if err != nil {
			t.Fatal(err)
		}
		if !r.Allowed {
			break
		}
		more++
	}
	t.Logf("new window: %d admitted by the other process, %d more by the lease holder", first, more)
	if first+more > limit {
		t.Errorf("admitted %d in one fixed window, above its limit of %d", first+more, limit)
	}
}

// With WithClock, a call that waited for another's lease request and then
// asks for a lease itself sends the time of its own request: a lease
// decided at the time read before the wait would outlive the fixed
// window it was taken in.
func TestLeasesAskAtOwnTime(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	gate := newLeaseGate()
	c.AddHook(gate)
	clk := clock.NewFake(epoch)
	const limit = 1000
	alg := redislimit.FixedWindow(limit, time.Second)
	leasing := newRedisLimiter(t, c, alg, clk, redislimit.WithLeases(10, time.Hour))
	other := newRedisLimiter(t, redistest.NewClient(t, c.Options().Addr), alg, clk)
	heat(t, leasing, clk, "k") // the window opened at epoch
	ctx := context.Background()
	gate.armed.Store(true)
	// Two callers of cost 6 on leases of 10 units: one of them finds the
	// lease that the other's request brings short, and asks for another.
	asker := make(chan error, 1)
	go func() {
		for {
			r, err := leasing.AllowN(ctx, "k", 6)
			if err != nil || !r.Allowed {
				asker <- err
				return
			}
			select {
			case <-gate.entered:
				asker <- nil
				return
			default:
			}
		}
	}()
	select {
	case <-gate.entered:
	case err := <-asker:
		t.Fatalf("no lease request: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no lease request")
	}
	waiter := make(chan error, 1)
	go func() {
		r, err := leasing.AllowN(ctx, "k", 6)
		if err == nil && !r.Allowed {
			t.Errorf("the waiter was denied: %+v", r)
		}
		waiter <- err
	}()
	// Let the waiter reach the request in flight (if it does not, the
	// test cannot see the stale time, and passes).
	time.Sleep(200 * time.Millisecond)
	clk.Advance(300 * time.Millisecond)
	close(gate.release)
	if err := <-asker; err != nil {
		t.Fatal(err)
	}
	if err := <-waiter; err != nil {
		t.Fatal(err)
	}
	// The window the leases were taken in ended at epoch + 1s.
	clk.Set(epoch.Add(time.Second + 100*time.Millisecond))
	first := drainKey(t, other, "k")
	more := drainKey(t, leasing, "k")
	t.Logf("next window: %d admitted by the other process, %d more by the lease holder", first, more)
	if first+more > limit {
		t.Errorf("admitted %d in one fixed window, above its limit of %d", first+more, limit)
	}
}

// slowLeases is a go-redis hook that holds the reply to every lease
// request for hold.
type slowLeases struct{ hold time.Duration }

func (s slowLeases) DialHook(next redis.DialHook) redis.DialHook { return next }

func (s slowLeases) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if isLeaseRequest(cmd) {
			time.Sleep(s.hold)
		}
		return err
	}
}

func (s slowLeases) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A call that waits for one lease request, finds its units gone to
// another caller and asks again still returns within the limiter's
// timeout (and a timer's slack).
func TestLeasesWaitWithinTimeout(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	const timeout, hold = 300 * time.Millisecond, 200 * time.Millisecond
	clk := clock.NewFake(epoch)
	lim, err := redislimit.New(c, redislimit.FixedWindow(1000, time.Hour),
		redislimit.WithPrefix(testPrefix(t)), redislimit.WithClock(clk.Now),
		redislimit.WithTimeout(timeout), redislimit.WithLeases(10, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	heat(t, lim, clk, "k")
	ctx := context.Background()
	if err := lim.ReturnLeases(ctx); err != nil {
		t.Fatal(err)
	}
	c.AddHook(slowLeases{hold})
	// Two callers of cost 6 on leases of 10 units: the second waits for
	// the first's request; one of them then finds the lease short.
	took := make(chan time.Duration, 2)
	call := func() {
		start := time.Now()
		r, err := lim.AllowN(ctx, "k", 6)
		if err != nil && !errors.Is(err, redislimit.ErrTimeout) || err == nil && !r.Allowed {
			t.Errorf("AllowN: %+v, %v", r, err)
		}
		took <- time.Since(start)
	}
	go call()
	time.Sleep(hold / 4)
	go call()
	longest := max(<-took, <-took)
	t.Logf("the longer call took %v; timeout %v", longest, timeout)
	if longest > timeout+50*time.Millisecond {
		t.Errorf("a call took %v, past the limiter's timeout of %v", longest, timeout)
	}
}

// A lease taken just before its fixed window ends has a timer of a µs,
// which may fire before the request that made it has stored it: no race.
func TestLeasesTimerRace(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	clk := clock.NewFake(epoch)
	lim := newRedisLimiter(t, c, redislimit.FixedWindow(100_000, time.Second), clk, redislimit.WithLeases(100, time.Hour))
	ctx := context.Background()
	for i := range 20 {
		key := "k" + string(rune('a'+i))
		clk.Set(epoch)
		heat(t, lim, clk, key) // the window opened at epoch
		if err := lim.ReturnLeases(ctx); err != nil {
			t.Fatal(err)
		}
		// A µs before the window's end: the next call asks for a lease
		// that ends in a µs.
		clk.Set(epoch.Add(time.Second - time.Microsecond))
		if r, err := lim.Allow(ctx, key); err != nil || !r.Allowed {
			t.Fatal(r, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// Observation.Leased comes with a round trip only for the call that
// asked Redis for the lease: at most one per script call.
func TestLeasesObservedRoundTrips(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	clk := clock.NewFake(epoch)
	var both, leased atomic.Int64
	counting := &counter{}
	c.AddHook(counting)
	lim := newRedisLimiter(t, c, redislimit.FixedWindow(100_000, time.Hour), clk, redislimit.WithLeases(100, time.Hour),
		redislimit.WithObserver(func(_ context.Context, o redislimit.Observation) {
			if o.Leased && o.RoundTrips != 0 {
				both.Add(1)
			}
			if o.Leased {
				leased.Add(1)
			}
		}))
	heat(t, lim, clk, "k")
	if n, calls := both.Load(), scriptCalls(counting); n == 0 || n > int64(calls) {
		t.Errorf("%d observations with Leased set and a round trip, for %d script calls", n, calls)
	}
	if both.Load() >= leased.Load() {
		t.Errorf("%d leased decisions, %d of them with a round trip", leased.Load(), both.Load())
	}
}

// The same key read with a shorter window (a plan changed with Using, or
// another process's configuration) ends the window a lease was taken in
// early; the lease may still give its units back until the end its own
// window length gave, into the new window, as documented: at most its
// unused units (100), once.
func TestLeasesWindowShortenedBound(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	clk := clock.NewFake(epoch)
	const limit = 1000
	leasing := newRedisLimiter(t, c, redislimit.FixedWindow(limit, time.Hour), clk, redislimit.WithLeases(100, time.Hour))
	other := newRedisLimiter(t, c, redislimit.FixedWindow(limit, 10*time.Minute), clk)
	heat(t, leasing, clk, "k")
	// Past the end of the lease's window read with 10 minutes.
	clk.Advance(11 * time.Minute)
	ctx := context.Background()
	first := drainKey(t, other, "k")
	if err := leasing.ReturnLeases(ctx); err != nil {
		t.Fatal(err)
	}
	more := drainKey(t, other, "k")
	t.Logf("the 10-minute window: %d admitted, %d more after ReturnLeases", first, more)
	if first != limit || first+more > limit+100 {
		t.Errorf("admitted %d in one window and %d more, want %d and at most the lease's 100", first, more, limit)
	}
}

// A Reset through a Limiter derived with Using (the same Redis key) ends
// the parent's lease too, which must not give its units back into the
// key's new state.
func TestLeasesResetThroughUsing(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	clk := clock.NewFake(epoch)
	const limit = 1000
	parent := newRedisLimiter(t, c, redislimit.FixedWindow(limit, time.Hour), clk, redislimit.WithLeases(100, time.Hour))
	derived, err := parent.Using(redislimit.FixedWindow(limit+1, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	heat(t, parent, clk, "k")
	ctx := context.Background()
	if err := derived.Reset(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	other := newRedisLimiter(t, c, redislimit.FixedWindow(limit, time.Hour), clk)
	first := drainKey(t, other, "k")
	if err := parent.ReturnLeases(ctx); err != nil {
		t.Fatal(err)
	}
	more := drainKey(t, other, "k")
	t.Logf("after Reset: %d admitted, %d more after ReturnLeases", first, more)
	if first+more > limit {
		t.Errorf("admitted %d after Reset, above the limit of %d", first+more, limit)
	}
}

// A token bucket's unused units go back only while the bucket, without
// them, would not be full yet: between that moment and the one when it
// is full with them, a refund would let others take more than the burst
// at one instant.
func TestLeasesTokenBucketGiveBackBeforeFull(t *testing.T) {
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	clk := clock.NewFake(epoch)
	const burst = 1000 // a unit a ms
	alg := redislimit.TokenBucket(burst, time.Second, burst)
	leasing := newRedisLimiter(t, c, alg, clk, redislimit.WithLeases(100, time.Hour))
	other := newRedisLimiter(t, c, alg, clk)
	admitted := heat(t, leasing, clk, "k")
	ctx := context.Background()
	r, err := other.Peek(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	// The bucket was full at epoch and has not been since: Redis has
	// consumed a unit for each ms from epoch to its TAT.
	consumed := int((clk.Now().Sub(epoch) + r.ResetAfter) / time.Millisecond)
	unused := consumed - admitted
	if unused < 2 {
		t.Fatalf("%d units unused in the lease after %d calls, want a lease with some left", unused, admitted)
	}
	// Between the moment the bucket would be full without the unused
	// units and the one it is full with them.
	clk.Advance(r.ResetAfter - time.Duration(unused/2)*time.Millisecond)
	first := drainKey(t, other, "k")
	if err := leasing.ReturnLeases(ctx); err != nil {
		t.Fatal(err)
	}
	more := drainKey(t, other, "k")
	t.Logf("%d unused; at one instant: %d admitted, %d more after ReturnLeases", unused, first, more)
	if first+more > burst {
		t.Errorf("admitted %d at one instant, above the burst of %d", first+more, burst)
	}
}
