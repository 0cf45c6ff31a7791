package redislimit_test

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/faultproxy"
	"github.com/redislimit/redislimit/internal/leakcheck"
	"github.com/redislimit/redislimit/internal/redistest"
)

// clientKinds are the two ways a limiter calls Redis: on a client built
// with default options (the call runs on a worker goroutine, so that a
// stalled socket read cannot hold the caller), and on one that bounds
// socket reads by the context's deadline (the call runs on the caller's
// goroutine).
var clientKinds = []struct {
	name string
	opts []func(*redis.Options)
}{
	{"default-client", nil},
	{"context-timeout-client", []func(*redis.Options){func(o *redis.Options) { o.ContextTimeoutEnabled = true }}},
}

// margin is how much later than its timeout a decision may return on a
// loaded test machine.
const margin = 300 * time.Millisecond

// errLog records the errors passed to WithOnError.
type errLog struct {
	mu   sync.Mutex
	errs []error
}

func (e *errLog) onError(ctx context.Context, err error) {
	if ctx == nil {
		panic("OnError called with a nil context")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, err)
}

func (e *errLog) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.errs)
}

func (e *errLog) last() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.errs) == 0 {
		return nil
	}
	return e.errs[len(e.errs)-1]
}

func TestNewValidatesFailureOptions(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	fw := redislimit.FixedWindow(5, time.Minute)
	custom := badAlg{name: "custom", limit: 5, ret: "4, 0, 0"}
	tests := []struct {
		name  string
		local bool
		alg   redislimit.Algorithm
		opts  []redislimit.Option
		want  error
	}{
		{"zero timeout", false, fw, []redislimit.Option{redislimit.WithTimeout(0)}, redislimit.ErrInvalidConfig},
		{"negative timeout", false, fw, []redislimit.Option{redislimit.WithTimeout(-time.Second)}, redislimit.ErrInvalidConfig},
		{"unknown policy", false, fw, []redislimit.Option{redislimit.WithFailurePolicy(99)}, redislimit.ErrInvalidConfig},
		{"negative policy", false, fw, []redislimit.Option{redislimit.WithFailurePolicy(-1)}, redislimit.ErrInvalidConfig},
		{"zero instances", false, fw, []redislimit.Option{redislimit.WithLocalInstances(0)}, redislimit.ErrInvalidConfig},
		{"FailLocal without LocalAlgorithm", false, custom, []redislimit.Option{redislimit.WithFailurePolicy(redislimit.FailLocal)}, redislimit.ErrInvalidConfig},
		{"FailOpen with a custom algorithm", false, custom, []redislimit.Option{redislimit.WithFailurePolicy(redislimit.FailOpen)}, nil},
		{"every option", false, fw, []redislimit.Option{redislimit.WithFailurePolicy(redislimit.FailLocal), redislimit.WithLocalInstances(3),
			redislimit.WithTimeout(time.Millisecond), redislimit.WithOnError(nil)}, nil},
		{"local without LocalAlgorithm", true, custom, nil, redislimit.ErrInvalidConfig},
		{"local nil algorithm", true, nil, nil, redislimit.ErrNilAlgorithm},
		{"local bad config", true, redislimit.TokenBucket(0, time.Second, 1), nil, redislimit.ErrInvalidConfig},
		{"local zero instances", true, fw, []redislimit.Option{redislimit.WithLocalInstances(0)}, redislimit.ErrInvalidConfig},
		{"local ok", true, fw, []redislimit.Option{redislimit.WithLocalInstances(1 << 40)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var lim *redislimit.Limiter
			var err error
			if tt.local {
				lim, err = redislimit.NewLocal(tt.alg, tt.opts...)
			} else {
				lim, err = redislimit.New(c, tt.alg, tt.opts...)
			}
			if !errors.Is(err, tt.want) || (lim == nil) != (tt.want != nil) {
				t.Fatalf("got %v, %v; want error %v", lim, err, tt.want)
			}
		})
	}
}

// Each policy's Result and error when Redis is down, and what never goes
// to the policy: bad input and a caller's context that ended.
func TestFailurePolicies(t *testing.T) {
	ctx := context.Background()
	down := redistest.NewClient(t, closedAddr(t), func(o *redis.Options) { o.MaxRetries, o.DialerRetries = -1, 1 })
	tests := []struct {
		policy redislimit.FailurePolicy
		n      int
		want   redislimit.Result // for the first call
		err    bool
	}{
		{redislimit.FailError, 1, redislimit.Result{}, true},
		{redislimit.FailOpen, 1, redislimit.Result{Allowed: true, Limit: 10, Remaining: 10, Degraded: true}, false},
		{redislimit.FailClosed, 1, redislimit.Result{Limit: 10, RetryAfter: redislimit.BreakerCooldown, ResetAfter: redislimit.BreakerCooldown, Degraded: true}, false},
		// 10 per minute over 2 instances: 5 per minute locally.
		{redislimit.FailLocal, 1, redislimit.Result{Allowed: true, Limit: 5, Remaining: 4, ResetAfter: time.Minute, Degraded: true}, false},
		{redislimit.FailLocal, 5, redislimit.Result{Allowed: true, Limit: 5, Remaining: 0, ResetAfter: time.Minute, Degraded: true}, false},
		// A cost the local share can never admit is denied, not an error.
		{redislimit.FailLocal, 8, redislimit.Result{Limit: 5, Remaining: 5, RetryAfter: time.Minute, Degraded: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.policy.String()+"/"+strconv.Itoa(tt.n), func(t *testing.T) {
			var log errLog
			lim, err := redislimit.New(down, redislimit.FixedWindow(10, time.Minute),
				redislimit.WithFailurePolicy(tt.policy), redislimit.WithLocalInstances(2),
				redislimit.WithOnError(log.onError), redislimit.WithPrefix(testPrefix(t)))
			if err != nil {
				t.Fatal(err)
			}
			got, err := lim.AllowN(ctx, "k", tt.n)
			if (err != nil) != tt.err {
				t.Fatalf("AllowN with Redis down: error %v, want error: %v", err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("AllowN(%d) with Redis down (-want +got):\n%s", tt.n, diff)
			}
			if log.count() != 1 {
				t.Fatalf("OnError called %d times for one failed decision, want 1", log.count())
			}
			if err != nil && log.last() != err {
				t.Errorf("OnError got %v, AllowN returned %v", log.last(), err)
			}

			// Peek follows the policy too.
			p, err := lim.Peek(ctx, "k")
			if (err != nil) != tt.err || p.Degraded == tt.err {
				t.Errorf("Peek with Redis down = %+v, %v", p, err)
			}
			before := log.count()

			// Bad input and an ended context are returned, never decided by
			// the policy nor passed to OnError.
			if _, err := lim.Allow(ctx, ""); !errors.Is(err, redislimit.ErrEmptyKey) {
				t.Errorf("Allow(\"\") = %v, want ErrEmptyKey", err)
			}
			if _, err := lim.AllowN(ctx, "k", 0); !errors.Is(err, redislimit.ErrInvalidCost) {
				t.Errorf("AllowN(0) = %v, want ErrInvalidCost", err)
			}
			if _, err := lim.AllowN(ctx, "k", 11); !errors.Is(err, redislimit.ErrCostExceedsLimit) {
				t.Errorf("AllowN(11) = %v, want ErrCostExceedsLimit", err)
			}
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if r, err := lim.Allow(cctx, "k"); !errors.Is(err, context.Canceled) || !cmp.Equal(r, redislimit.Result{}) {
				t.Errorf("Allow with a cancelled context = %+v, %v; want context.Canceled", r, err)
			}
			if n := log.count(); n != before {
				t.Errorf("bad input and a cancelled context called OnError %d times", n-before)
			}

			// Reset reports the error whatever the policy.
			if err := lim.Reset(ctx, "k"); err == nil {
				t.Error("Reset with Redis down: nil error")
			}
			if n := log.count(); n != before+1 {
				t.Errorf("a failed Reset called OnError %d times, want 1", n-before)
			}
		})
	}
}

// FailLocal admits at most the local share per period, however many calls.
func TestFailLocalIsALimit(t *testing.T) {
	down := redistest.NewClient(t, closedAddr(t), func(o *redis.Options) { o.MaxRetries, o.DialerRetries = -1, 1 })
	for _, alg := range []redislimit.Algorithm{
		redislimit.FixedWindow(30, time.Hour),
		redislimit.SlidingLog(30, time.Hour),
		redislimit.TokenBucket(30, time.Hour, 30),
	} {
		t.Run(alg.Name(), func(t *testing.T) {
			lim, err := redislimit.New(down, alg, redislimit.WithFailurePolicy(redislimit.FailLocal), redislimit.WithLocalInstances(3))
			if err != nil {
				t.Fatal(err)
			}
			var admitted atomic.Int64
			var wg sync.WaitGroup
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 10; i++ {
						r, err := lim.Allow(context.Background(), "k")
						if err != nil || !r.Degraded || r.Limit != 10 {
							t.Errorf("Allow = %+v, %v; want a local decision out of 10", r, err)
							return
						}
						if r.Allowed {
							admitted.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			if admitted.Load() != 10 {
				t.Errorf("80 calls admitted %d, want 10 (30 over 3 instances)", admitted.Load())
			}
		})
	}
}

// After BreakerThreshold failures in a row, calls go straight to the
// policy without touching the network; after the cool-down one probe goes
// through, and a successful probe closes the breaker.
func TestCircuitBreaker(t *testing.T) {
	s := redistest.Start(t)
	p := faultproxy.Start(t, s.Addr())
	counting := &counter{}
	c := redistest.NewClient(t, p.Addr())
	c.AddHook(counting)
	var log errLog
	lim, err := redislimit.New(c, redislimit.TokenBucket(100, time.Second, 100),
		redislimit.WithFailurePolicy(redislimit.FailClosed), redislimit.WithOnError(log.onError), redislimit.WithPrefix(testPrefix(t)))
	if err != nil {
		t.Fatal(err)
	}
	const threshold, cooldown = 3, 300 * time.Millisecond
	redislimit.SetBreaker(lim, threshold, cooldown)
	ctx := context.Background()
	if r, err := lim.Allow(ctx, "k"); err != nil || r.Degraded {
		t.Fatalf("Allow on a healthy Redis = %+v, %v", r, err)
	}

	p.Refuse()
	p.CutAll()
	counting.reset()
	for i := 1; i <= threshold; i++ {
		r, err := lim.Allow(ctx, "k")
		if err != nil || !r.Degraded || r.Allowed {
			t.Fatalf("Allow #%d with Redis down = %+v, %v; want a degraded denial", i, r, err)
		}
		if rt, _ := counting.snapshot(); rt != i {
			t.Fatalf("failure #%d: %d calls reached the client, want %d", i, rt, i)
		}
	}
	opened := time.Now()
	for i := 0; i < 20; i++ {
		r, err := lim.Allow(ctx, "k")
		if err != nil || !r.Degraded {
			t.Fatalf("Allow with the breaker open = %+v, %v", r, err)
		}
		if !errors.Is(log.last(), redislimit.ErrCircuitOpen) {
			t.Fatalf("OnError got %v with the breaker open, want ErrCircuitOpen", log.last())
		}
	}
	if rt, _ := counting.snapshot(); rt != threshold && time.Since(opened) < cooldown {
		t.Fatalf("calls with the breaker open reached the client: %d calls in all, want %d", rt, threshold)
	}
	if n := log.count(); n != threshold+20 {
		t.Errorf("OnError called %d times for %d degraded decisions", n, threshold+20)
	}

	// After the cool-down a single probe goes out; while Redis is still
	// down it fails and the breaker opens again.
	time.Sleep(cooldown)
	counting.reset()
	for i := 0; i < 5; i++ {
		if r, _ := lim.Allow(ctx, "k"); !r.Degraded {
			t.Fatalf("Allow with Redis down = %+v, want degraded", r)
		}
	}
	if rt, _ := counting.snapshot(); rt != 1 {
		t.Errorf("half-open breaker let %d calls through, want 1 probe", rt)
	}

	p.Heal()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := lim.Allow(ctx, "k")
		if err == nil && !r.Degraded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no decision from Redis 5s after it came back: %+v, %v", r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	counting.reset()
	for i := 0; i < 3; i++ {
		if r, err := lim.Allow(ctx, "k"); err != nil || r.Degraded {
			t.Fatalf("Allow after recovery = %+v, %v", r, err)
		}
	}
	if rt, _ := counting.snapshot(); rt != 3 {
		t.Errorf("closed breaker: 3 decisions made %d calls, want 3", rt)
	}
}

// loadStats sums up the decisions made during one phase of a load.
type loadStats struct {
	calls, allowed, degraded, errs int64
	worst                          time.Duration
	lastErr                        error
}

// load calls Allow on lim from several goroutines, one call per
// millisecond each, until stopped, and sums up the outcomes by phase.
type load struct {
	lim  *redislimit.Limiter
	stop chan struct{}
	wg   sync.WaitGroup

	mu    sync.Mutex
	st    loadStats
	total loadStats // every phase
}

func startLoad(t *testing.T, lim *redislimit.Limiter, workers int) *load {
	l := &load{lim: lim, stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			key := "w" + strconv.Itoa(w)
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				start := time.Now()
				r, err := lim.Allow(context.Background(), key)
				took := time.Since(start)
				l.mu.Lock()
				for _, st := range []*loadStats{&l.st, &l.total} {
					st.calls++
					st.worst = max(st.worst, took)
					switch {
					case err != nil:
						st.errs++
						st.lastErr = err
					case r.Degraded:
						st.degraded++
					}
					if r.Allowed {
						st.allowed++
					}
				}
				l.mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		}()
	}
	t.Cleanup(l.close)
	return l
}

// phase returns the outcomes since the previous phase.
func (l *load) phase() loadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.st
	l.st = loadStats{}
	return st
}

func (l *load) close() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// waitHealthy waits until a decision comes from Redis, and returns how
// long that took.
func waitHealthy(t *testing.T, lim *redislimit.Limiter) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		r, err := lim.Allow(context.Background(), "probe")
		if err == nil && !r.Degraded {
			return time.Since(start)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("Redis decisions did not come back within 10s: %+v, %v", r, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFaults breaks a real redis-server under load in several ways, with a
// go-redis client built with default options, and checks that every
// decision returns within the timeout (plus a margin) with the policy
// applied, that decisions come back from Redis by themselves, and that no
// goroutine is left behind.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("fault injection takes seconds")
	}
	const timeout = 200 * time.Millisecond
	const workers = 16
	faults := []struct {
		name   string
		policy redislimit.FailurePolicy
		break_ func(s *redistest.Server, p *faultproxy.Proxy)
		heal   func(s *redistest.Server, p *faultproxy.Proxy)
	}{
		{"stalled", redislimit.FailOpen, func(_ *redistest.Server, p *faultproxy.Proxy) { p.Stall() }, func(_ *redistest.Server, p *faultproxy.Proxy) { p.Heal() }},
		{"replies-lost", redislimit.FailClosed, func(_ *redistest.Server, p *faultproxy.Proxy) { p.StallReplies() }, func(_ *redistest.Server, p *faultproxy.Proxy) { p.Heal() }},
		{"slow", redislimit.FailLocal, func(_ *redistest.Server, p *faultproxy.Proxy) { p.SetLatency(2 * timeout) }, func(_ *redistest.Server, p *faultproxy.Proxy) { p.Heal() }},
		{"killed", redislimit.FailLocal, func(_ *redistest.Server, p *faultproxy.Proxy) { p.Refuse(); p.CutAll() }, func(_ *redistest.Server, p *faultproxy.Proxy) { p.Heal() }},
		{"restarted", redislimit.FailError, func(s *redistest.Server, _ *faultproxy.Proxy) { s.Stop() }, func(s *redistest.Server, _ *faultproxy.Proxy) { s.Restart() }},
	}
	for _, f := range faults {
		for _, ck := range clientKinds {
			t.Run(f.name+"/"+ck.name, func(t *testing.T) {
				t.Cleanup(leakcheck.Goroutines(t))
				s := redistest.Start(t)
				p := faultproxy.Start(t, s.Addr())
				c := redistest.NewClient(t, p.Addr(), ck.opts...)
				var log errLog
				lim, err := redislimit.New(c, redislimit.FixedWindow(1<<30, time.Hour), redislimit.WithTimeout(timeout),
					redislimit.WithFailurePolicy(f.policy), redislimit.WithOnError(log.onError), redislimit.WithPrefix(testPrefix(t)))
				if err != nil {
					t.Fatal(err)
				}
				baseG := runtime.NumGoroutine()
				ld := startLoad(t, lim, workers)
				time.Sleep(300 * time.Millisecond)
				if st := ld.phase(); st.errs != 0 || st.degraded != 0 || st.calls == 0 {
					t.Fatalf("healthy phase: %+v", st)
				}

				f.break_(s, p)
				maxG := 0
				for i := 0; i < 30; i++ {
					time.Sleep(50 * time.Millisecond)
					maxG = max(maxG, runtime.NumGoroutine())
				}
				st := ld.phase()
				t.Logf("%s, %v: %d decisions, %d degraded, %d errors, worst %v; goroutines %d → at most %d",
					f.name, f.policy, st.calls, st.degraded, st.errs, st.worst, baseG, maxG)
				if st.worst > timeout+margin {
					t.Errorf("a decision took %v, want at most %v + %v", st.worst, timeout, margin)
				}
				if st.degraded+st.errs == 0 {
					t.Errorf("no failed decision during the fault: %+v", st)
				}
				if f.policy == redislimit.FailError && st.degraded != 0 || f.policy != redislimit.FailError && st.errs != 0 {
					t.Errorf("%v: %d degraded decisions and %d errors (last %v)", f.policy, st.degraded, st.errs, st.lastErr)
				}
				// The load's workers and one call each, at most MaxAbandoned
				// abandoned calls, and 5 goroutines per proxied connection for
				// at most a pool's worth (20) of connections, plus slack.
				if limit := baseG + 2*workers + redislimit.MaxAbandoned + 5*20 + 50; maxG > limit {
					t.Errorf("%d goroutines during the fault, want at most %d", maxG, limit)
				}

				f.heal(s, p)
				back := waitHealthy(t, lim)
				t.Logf("%s: decisions from Redis again %v after healing", f.name, back)
				ld.phase()
				time.Sleep(300 * time.Millisecond)
				if st := ld.phase(); st.errs != 0 || st.degraded != 0 {
					t.Errorf("after recovery: %+v", st)
				}
				ld.close()
				// Every failed decision, and every failed probe of waitHealthy,
				// reached OnError; none was lost or counted twice.
				if n, failed := int64(log.count()), ld.total.degraded+ld.total.errs; n < failed || n > failed+int64(back/(10*time.Millisecond))+1 {
					t.Errorf("OnError called %d times for %d failed decisions under load", n, failed)
				}
			})
		}
	}
}

// SCRIPT FLUSH and FLUSHALL under load cost nothing but an EVAL.
func TestScriptFlushAndFlushAllUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load takes a second")
	}
	s := redistest.Start(t)
	c := s.Client()
	var log errLog
	lim, err := redislimit.New(c, redislimit.SlidingLog(1<<20, time.Hour), redislimit.WithOnError(log.onError), redislimit.WithPrefix(testPrefix(t)))
	if err != nil {
		t.Fatal(err)
	}
	ld := startLoad(t, lim, 8)
	admin := s.Client()
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		time.Sleep(25 * time.Millisecond)
		if err := admin.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(25 * time.Millisecond)
		if err := admin.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	ld.close()
	st := ld.phase()
	t.Logf("%d decisions with SCRIPT FLUSH and FLUSHALL every 50ms: worst %v", st.calls, st.worst)
	if st.errs != 0 || st.degraded != 0 || log.count() != 0 || st.calls == 0 {
		t.Errorf("%+v, OnError called %d times; want no error", st, log.count())
	}
}

// Callers cancelling their contexts while calls are in flight get their
// context's error or a decision, on both kinds of client: never a panic,
// a race, or a call that outlives its caller by more than go-redis's own
// timeouts.
func TestCancelMidCall(t *testing.T) {
	for _, ck := range clientKinds {
		t.Run(ck.name, func(t *testing.T) {
			t.Cleanup(leakcheck.Goroutines(t))
			s := redistest.Start(t)
			c := redistest.NewClient(t, s.Addr(), ck.opts...)
			lim, err := redislimit.New(c, redislimit.TokenBucket(1_000_000, time.Second, 1_000_000), redislimit.WithPrefix(testPrefix(t)))
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var cancelled, decided atomic.Int64
			for w := 0; w < 16; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; i < 150; i++ {
						ctx, cancel := context.WithCancel(context.Background())
						time.AfterFunc(time.Duration((w*7+i*13)%80)*time.Microsecond, cancel)
						r, err := lim.Allow(ctx, "k"+strconv.Itoa(i%8))
						switch {
						case err == nil:
							if !r.Allowed {
								t.Errorf("denied under a limit never reached: %+v", r)
							}
							decided.Add(1)
						case errors.Is(err, context.Canceled):
							cancelled.Add(1)
						default:
							t.Errorf("Allow: %v, want a decision or context.Canceled", err)
						}
						cancel()
					}
				}(w)
			}
			wg.Wait()
			t.Logf("%d decided, %d cancelled", decided.Load(), cancelled.Load())
			if cancelled.Load() == 0 {
				t.Error("no call was cancelled in flight: the test proves nothing")
			}
		})
	}
}

// On a stalled Redis, a decision returns at the earlier of the limiter's
// timeout (with ErrTimeout) and the caller's deadline (with the caller's
// error), on both kinds of client.
func TestDeadlinesOnStalledRedis(t *testing.T) {
	for _, ck := range clientKinds {
		t.Run(ck.name, func(t *testing.T) {
			s := redistest.Start(t)
			p := faultproxy.Start(t, s.Addr())
			opts := append([]func(*redis.Options){func(o *redis.Options) { o.MaxRetries = -1 }}, ck.opts...)
			c := redistest.NewClient(t, p.Addr(), opts...)
			const timeout = 300 * time.Millisecond
			lim, err := redislimit.New(c, redislimit.FixedWindow(10, time.Minute), redislimit.WithTimeout(timeout), redislimit.WithPrefix(testPrefix(t)))
			if err != nil {
				t.Fatal(err)
			}
			redislimit.SetBreaker(lim, 1000, time.Millisecond) // keep the breaker out of the way
			ctx := context.Background()
			if _, err := lim.Allow(ctx, "k"); err != nil {
				t.Fatal(err)
			}
			p.Stall()
			defer p.Heal()
			for i := 0; i < 3; i++ {
				start := time.Now()
				_, err := lim.Allow(ctx, "k")
				if took := time.Since(start); !errors.Is(err, redislimit.ErrTimeout) || took < timeout || took > timeout+margin {
					t.Errorf("stalled, limiter timeout %v: Allow returned %v after %v; want ErrTimeout at the timeout", timeout, err, took)
				}
			}
			dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err = lim.Allow(dctx, "k")
			if took := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redislimit.ErrTimeout) || took > 50*time.Millisecond+margin {
				t.Errorf("stalled, caller deadline 50ms: Allow returned %v after %v; want the caller's DeadlineExceeded at 50ms", err, took)
			}
		})
	}
}
