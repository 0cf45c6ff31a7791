package redislimit_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
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
	"github.com/redislimit/redislimit/internal/faultproxy"
	"github.com/redislimit/redislimit/internal/leakcheck"
	"github.com/redislimit/redislimit/internal/redistest"
)

// shape is a go-redis hook that records how script calls (EVALSHA and
// EVAL) reach Redis: alone or in pipelines, the longest pipeline, the EVALs
// that answer NOSCRIPT, and, when shardOf is set, the pipelines whose calls
// span more than one shard. Other commands, such as the HELLO and CLIENT
// SETINFO that go-redis sends through hooks on every new connection, are
// not counted. Its methods are safe for concurrent use.
type shape struct {
	// shardOf returns the shard of a limiter's Redis key, or -1 when it is
	// not known; nil when shards are not tracked.
	shardOf func(rkey string) int

	mu             sync.Mutex
	singles        int // script calls sent alone
	pipelines      int // pipelines holding script calls
	longest        int // script calls in the longest pipeline
	evalshas       int // EVALSHAs, alone or pipelined
	evals          int // EVALs sent alone
	pipelinedEvals int // EVALs sent in pipelines
	mixed          int // pipelines with calls on more than one shard
}

// shapeStats is a snapshot of a shape.
type shapeStats struct {
	singles, pipelines, longest, evalshas, evals, pipelinedEvals, mixed int
}

func (s *shape) DialHook(next redis.DialHook) redis.DialHook { return next }

func (s *shape) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		s.mu.Lock()
		switch strings.ToLower(cmd.Name()) {
		case "evalsha":
			s.singles++
			s.evalshas++
		case "eval":
			s.singles++
			s.evals++
		}
		s.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (s *shape) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		shards := map[int]bool{}
		if s.shardOf != nil {
			for _, cmd := range cmds {
				if args := cmd.Args(); len(args) > 3 {
					if k, ok := args[3].(string); ok {
						if sh := s.shardOf(k); sh >= 0 {
							shards[sh] = true
						}
					}
				}
			}
		}
		s.mu.Lock()
		scripts := 0
		for _, cmd := range cmds {
			switch strings.ToLower(cmd.Name()) {
			case "evalsha":
				scripts++
				s.evalshas++
			case "eval":
				scripts++
				s.pipelinedEvals++
			}
		}
		if scripts > 0 {
			s.pipelines++
			s.longest = max(s.longest, scripts)
		}
		if len(shards) > 1 {
			s.mixed++
		}
		s.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (s *shape) stats() shapeStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return shapeStats{s.singles, s.pipelines, s.longest, s.evalshas, s.evals, s.pipelinedEvals, s.mixed}
}

func (s *shape) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.singles, s.pipelines, s.longest, s.evalshas, s.evals, s.pipelinedEvals, s.mixed = 0, 0, 0, 0, 0, 0, 0
}

// firstErrors keeps the first few failures that goroutines report, so that
// a broken run prints a handful of lines rather than thousands.
type firstErrors struct {
	mu   sync.Mutex
	n    int
	msgs []string
}

func (e *firstErrors) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if len(e.msgs) < 5 {
		e.msgs = append(e.msgs, fmt.Sprintf(format, args...))
	}
}

func (e *firstErrors) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// report fails t with the failures kept, if any.
func (e *firstErrors) report(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n > 0 {
		t.Errorf("%d failures, the first %d:\n%s", e.n, len(e.msgs), strings.Join(e.msgs, "\n"))
	}
}

// hammer runs f(w) on workers goroutines that start together, and waits
// for them all.
func hammer(workers int, f func(w int)) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			f(w)
		}()
	}
	close(start)
	wg.Wait()
}

// waitUntil polls cond every few milliseconds and fails t if it is not
// true within d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// batchBackend is a Redis deployment that batched calls run on: one
// server, a cluster or a ring, with what the tests need to spread keys over
// its shards and to flush every shard's script cache.
type batchBackend struct {
	name string
	// client returns a new client with hooks added, closed when the test
	// ends.
	client func(t *testing.T, hooks ...redis.Hook) redis.UniversalClient
	// shards are clients of every shard's server, for admin commands.
	shards []*redis.Client
	// keys returns perShard user keys on every shard, made of prefix and a
	// number; after it, shardOf knows their shards.
	keys func(prefix string, perShard int) []string
	// shardOf returns the shard of a limiter key made from a user key that
	// keys returned, or -1; nil when the backend has one shard or does not
	// say where keys go (the ring).
	shardOf func(rkey string) int
	// spansShards reports whether a batch can hold calls for several
	// nodes.
	spansShards bool
}

// flushScripts empties every shard's script cache.
func (b batchBackend) flushScripts(ctx context.Context) error {
	for _, s := range b.shards {
		if err := s.ScriptFlush(ctx).Err(); err != nil {
			return err
		}
	}
	return nil
}

// keysPerShard returns how many keys under the running test's prefix each
// shard holds.
func (b batchBackend) keysPerShard(t *testing.T) []int {
	t.Helper()
	n := make([]int, len(b.shards))
	for i, s := range b.shards {
		keys, err := s.Keys(context.Background(), testPrefix(t)+"*").Result()
		if err != nil {
			t.Fatalf("KEYS on shard %d: %v", i, err)
		}
		n[i] = len(keys)
	}
	return n
}

// forEachBatchBackend runs f as a subtest on miniredis, a real
// redis-server, a real three-master Redis Cluster and a ring of three real
// servers.
func forEachBatchBackend(t *testing.T, f func(t *testing.T, b batchBackend)) {
	t.Helper()
	redistest.ForEach(t, func(t *testing.T, rb redistest.Backend) {
		f(t, batchBackend{
			name: rb.Name,
			client: func(t *testing.T, hooks ...redis.Hook) redis.UniversalClient {
				c := rb.Client(t)
				for _, h := range hooks {
					c.AddHook(h)
				}
				return c
			},
			shards: []*redis.Client{rb.Client(t)},
			keys:   numberedKeys,
		})
	})
	t.Run("redis-cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t, 3, 0)
		var mu sync.Mutex
		slotShard := map[int]int{}
		var admins []*redis.Client
		for _, m := range cl.Masters() {
			admins = append(admins, m.Client())
		}
		f(t, batchBackend{
			name: "redis-cluster",
			client: func(t *testing.T, hooks ...redis.Hook) redis.UniversalClient {
				c := cl.Client()
				for _, h := range hooks {
					c.AddHook(h)
				}
				return c
			},
			shards: admins,
			keys: func(prefix string, perShard int) []string {
				var keys []string
				for i, m := range cl.Masters() {
					on := cl.KeysOn(m, prefix, perShard)
					mu.Lock()
					for _, k := range on {
						slotShard[redistest.KeySlot(k)] = i
					}
					mu.Unlock()
					keys = append(keys, on...)
				}
				return keys
			},
			shardOf: func(rkey string) int {
				mu.Lock()
				defer mu.Unlock()
				if sh, ok := slotShard[redistest.KeySlot(rkey)]; ok {
					return sh
				}
				return -1
			},
			spansShards: true,
		})
	})
	t.Run("redis-ring", func(t *testing.T) {
		ring, servers := redistest.StartRing(t, 3)
		_ = ring.Close() // each test makes its own
		var admins []*redis.Client
		for _, s := range servers {
			admins = append(admins, s.Client())
		}
		f(t, batchBackend{
			name: "redis-ring",
			client: func(t *testing.T, hooks ...redis.Hook) redis.UniversalClient {
				o := &redis.RingOptions{Addrs: map[string]string{}}
				for i, s := range servers {
					o.Addrs["shard"+strconv.Itoa(i)] = s.Addr()
				}
				r := redis.NewRing(o)
				t.Cleanup(func() { _ = r.Close() })
				for _, h := range hooks {
					r.AddHook(h)
				}
				return r
			},
			shards: admins,
			// Three times as many keys as asked for, so that every shard
			// very likely gets some: the ring does not say where a key goes.
			keys:        func(prefix string, perShard int) []string { return numberedKeys(prefix, 3*perShard) },
			spansShards: true,
		})
	})
}

// numberedKeys returns n keys: prefix0, prefix1, …
func numberedKeys(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(i)
	}
	return keys
}

// Concurrent decisions share round trips, and every caller still gets its
// own reply: 64 goroutines decide on a few hot keys with a small limit,
// which must admit exactly the limit however the calls were batched, and
// each on a key of its own, whose Remaining must count its calls down one
// by one. On a cluster and a ring the keys span every shard, so that
// batches mix nodes.
func TestTransportBatchesExactly(t *testing.T) {
	t.Cleanup(leakcheck.Goroutines(t))
	const limit, workers = 16, 64
	rounds := 12 // below limit: every call on a worker's own key is allowed
	if testing.Short() {
		rounds = 6
	}
	ctx := context.Background()
	forEachBatchBackend(t, func(t *testing.T, b batchBackend) {
		for _, row := range algtest.Rows {
			for _, nlim := range []int{1, 2} {
				t.Run(fmt.Sprintf("%s/%d-limiters", row.Name, nlim), func(t *testing.T) {
					var rt counter
					sh := &shape{shardOf: b.shardOf}
					c := b.client(t, &rt, sh)
					alg := row.New(limit, time.Hour)
					// Limiters of the same algorithm and prefix on one
					// client share the keys and the transport.
					var lims []*redislimit.Limiter
					for i := 0; i < nlim; i++ {
						lims = append(lims, newRedisLimiter(t, c, alg, nil))
					}
					hot := b.keys("hot", 2)
					own := b.keys("own", (workers+len(b.shards)-1)/len(b.shards))[:workers]
					admitted := make([]atomic.Int64, len(hot))
					var errs firstErrors
					hammer(workers, func(w int) {
						for i := 0; i < rounds; i++ {
							lim := lims[(w+i)%len(lims)]
							k := (w + i) % len(hot)
							r, err := lim.Allow(ctx, hot[k])
							switch {
							case err != nil:
								errs.add("Allow(%q): %v", hot[k], err)
							case r.Limit != limit || !r.Allowed && r.RetryAfter <= 0:
								errs.add("Allow(%q) = %+v", hot[k], r)
							case r.Allowed:
								admitted[k].Add(1)
							}
							r, err = lim.Allow(ctx, own[w])
							want := redislimit.Result{Allowed: true, Limit: limit, Remaining: limit - i - 1}
							if err != nil {
								errs.add("worker %d: Allow(%q) #%d: %v", w, own[w], i, err)
							} else if diff := cmp.Diff(want, r, cmpopts.IgnoreFields(redislimit.Result{}, "ResetAfter", "Parts")); diff != "" {
								errs.add("worker %d: Allow(%q) #%d = %+v, want %+v: a reply meant for another caller?", w, own[w], i, r, want)
							}
						}
					})
					errs.report(t)
					assertAdmitted(t, "admitted per hot key", hot, admitted, limit)
					decisions := 2 * workers * rounds
					trips, _ := rt.snapshot()
					st := sh.stats()
					t.Logf("%s: %d decisions in %d round trips, %d pipelines (longest %d, %d spanning shards)",
						b.name, decisions, trips, st.pipelines, st.longest, st.mixed)
					if trips >= decisions || st.pipelines == 0 {
						t.Errorf("%d decisions took %d round trips, %d of them pipelines; want fewer round trips than decisions", decisions, trips, st.pipelines)
					}
					// Batches are queued per node (see
					// TestTransportStalledShardSparesOthers); AllowMany's
					// pipelines are the ones that mix nodes.
					if b.spansShards {
						for i, n := range b.keysPerShard(t) {
							if n == 0 {
								t.Errorf("shard %d holds no key: the batches did not span every shard", i)
							}
						}
					}
				})
			}
		}
	})
}

// SCRIPT FLUSH on every node every 50 ms, while 64 goroutines decide, costs
// nothing but EVALs, alone and in pipelines: no error, and every hot key
// admits exactly its limit.
func TestTransportScriptFlushUnderBatching(t *testing.T) {
	t.Cleanup(leakcheck.Goroutines(t))
	const limit, workers = 30, 64
	run := 2 * time.Second
	if testing.Short() {
		run = 500 * time.Millisecond
	}
	ctx := context.Background()
	forEachBatchBackend(t, func(t *testing.T, b batchBackend) {
		sh := &shape{}
		c := b.client(t, sh)
		var lims []*redislimit.Limiter
		for _, row := range algtest.Rows {
			lims = append(lims, newRedisLimiter(t, c, row.New(limit, time.Hour), nil))
		}
		hot := b.keys("hot", 2)
		admitted := make([][]atomic.Int64, len(lims))
		for a := range admitted {
			admitted[a] = make([]atomic.Int64, len(hot))
		}
		var errs firstErrors
		var decisions atomic.Int64
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			hammer(workers, func(w int) {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					a, k := (w+i)%len(lims), (w/len(lims)+i)%len(hot)
					r, err := lims[a].Allow(ctx, hot[k])
					decisions.Add(1)
					if err != nil {
						errs.add("%s: Allow(%q): %v", algtest.Rows[a].Name, hot[k], err)
					} else if r.Allowed {
						admitted[a][k].Add(1)
					}
				}
			})
		}()
		flushes := 0
		for start := time.Now(); time.Since(start) < run; flushes++ {
			time.Sleep(50 * time.Millisecond)
			if err := b.flushScripts(ctx); err != nil {
				t.Errorf("SCRIPT FLUSH: %v", err)
				break
			}
		}
		close(stop)
		<-done
		errs.report(t)
		got := map[string]int64{}
		want := map[string]int64{}
		for a := range lims {
			for k, key := range hot {
				name := algtest.Rows[a].Name + "/" + key
				got[name], want[name] = admitted[a][k].Load(), limit
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("admitted per key with SCRIPT FLUSH every 50ms, limit %d (-want +got):\n%s", limit, diff)
		}
		st := sh.stats()
		t.Logf("%s: %d decisions, %d SCRIPT FLUSHes, %d pipelines, %d EVALs alone and %d in pipelines",
			b.name, decisions.Load(), flushes, st.pipelines, st.evals, st.pipelinedEvals)
		if st.pipelinedEvals == 0 {
			t.Errorf("no EVAL in a pipeline after %d SCRIPT FLUSHes: NOSCRIPT inside batches went untested", flushes)
		}
	})
}

// warmConns fills both of c's connection pools (go-redis keeps one for
// single commands and one for pipelines) with n idle connections, through
// p, so that a call sent while p holds replies back finds a connection that
// needs no handshake, and so does any retry go-redis might make of it.
func warmConns(t *testing.T, c *redis.Client, p *faultproxy.Proxy, n int) {
	t.Helper()
	ctx := context.Background()
	p.SetLatency(30 * time.Millisecond) // each command holds its connection that long
	defer p.SetLatency(0)
	var errs firstErrors
	hammer(2*n, func(w int) {
		var err error
		if w%2 == 0 {
			err = c.Ping(ctx).Err()
		} else {
			_, err = c.Pipelined(ctx, func(p redis.Pipeliner) error { return p.Ping(ctx).Err() })
		}
		if err != nil {
			errs.add("warm-up PING: %v", err)
		}
	})
	if errs.count() > 0 {
		t.Logf("warm-up: %d PINGs failed, the first: %v", errs.count(), errs.msgs[0])
	}
}

// allowEventually calls Allow on key until it succeeds, for a second at
// most: on a client with a short read timeout, the first calls on a loaded
// machine may time out.
func allowEventually(t *testing.T, lim *redislimit.Limiter, key string) {
	t.Helper()
	var err error
	for start := time.Now(); time.Since(start) < time.Second; time.Sleep(10 * time.Millisecond) {
		if _, err = lim.Allow(context.Background(), key); err == nil {
			return
		}
	}
	t.Fatalf("Allow(%q): %v", key, err)
}

// outcome is what one call returned, and how long it took.
type outcome struct {
	r    redislimit.Result
	err  error
	took time.Duration
}

// A script call whose reply is lost after the script ran is not sent
// again: each call consumes at most one unit, whether it went alone or in
// a pipeline, on a go-redis client with default retries (MaxRetries 3) and
// a short ReadTimeout, with or without ContextTimeoutEnabled. The reply is
// lost either by holding it back (the read times out) or by cutting the
// connection after the command went out (the read sees EOF); either way
// the call returns an error within its timeout.
func TestAtMostOnceWhenRepliesAreLost(t *testing.T) {
	const (
		big     = 1 << 30 // a limit never reached: Remaining counts consumption
		timeout = time.Second
	)
	faults := []struct {
		name string
		cut  bool
	}{
		{"reply-held", false},
		{"connection-cut", true},
	}
	for _, ck := range clientKinds {
		for _, f := range faults {
			for _, callers := range []int{1, 16} {
				mode := "alone"
				if callers > 1 {
					mode = "batched"
				}
				t.Run(ck.name+"/"+f.name+"/"+mode, func(t *testing.T) {
					t.Cleanup(leakcheck.Goroutines(t))
					ctx := context.Background()
					s := redistest.Start(t)
					p := faultproxy.Start(t, s.Addr())
					opts := append([]func(*redis.Options){func(o *redis.Options) { o.ReadTimeout = 100 * time.Millisecond }}, ck.opts...)
					c := redistest.NewClient(t, p.Addr(), opts...)
					sh := &shape{}
					c.AddHook(sh)
					alg := redislimit.FixedWindow(big, time.Hour)
					lim, err := redislimit.New(c, alg, redislimit.WithTimeout(timeout), redislimit.WithPrefix(testPrefix(t)))
					if err != nil {
						t.Fatal(err)
					}
					redislimit.SetBreaker(lim, 1000, time.Millisecond) // keep the breaker out of the way
					// direct reads the state past the proxy.
					direct, err := redislimit.New(s.Client(), alg, redislimit.WithPrefix(testPrefix(t)))
					if err != nil {
						t.Fatal(err)
					}
					keys := numberedKeys("k", callers)
					for _, k := range keys { // loads the script
						allowEventually(t, lim, k)
					}
					warmConns(t, c, p, 8)
					before := make([]int, callers)
					for i, k := range keys {
						r, err := direct.Peek(ctx, k)
						if err != nil {
							t.Fatalf("Peek(%q) past the proxy: %v", k, err)
						}
						before[i] = r.Remaining
					}
					sh.reset()

					p.StallReplies()
					out := make([]outcome, callers)
					done := make(chan struct{})
					go func() {
						defer close(done)
						hammer(callers, func(i int) {
							start := time.Now()
							r, err := lim.Allow(ctx, keys[i])
							out[i] = outcome{r, err, time.Since(start)}
						})
					}()
					// Wait for the scripts to be on the wire: the lone call, or
					// a pipeline of the batched ones.
					waitUntil(t, 2*time.Second, "scripts sent", func() bool {
						st := sh.stats()
						return callers == 1 && st.singles > 0 || callers > 1 && st.pipelines > 0
					})
					time.Sleep(20 * time.Millisecond) // through the proxy to the server
					if f.cut {
						p.CutAll()
						p.Heal()
					}
					<-done
					p.Heal()

					failed := 0
					for i, o := range out {
						if o.took > timeout+margin {
							t.Errorf("Allow(%q) took %v, want at most %v + %v", keys[i], o.took, timeout, margin)
						}
						if o.err != nil {
							failed++
						} else if want := before[i] - 1; !o.r.Allowed || o.r.Remaining != want {
							t.Errorf("Allow(%q) = %+v, want allowed with Remaining %d: a reply meant for another call?", keys[i], o.r, want)
						}
					}
					if callers == 1 && out[0].err == nil {
						t.Errorf("Allow whose reply was lost = %+v, nil error; want an error", out[0].r)
					}
					if failed == 0 {
						t.Errorf("no call of %d failed: no reply was lost, the test proves nothing", callers)
					}
					consumed := map[string]int{}
					total := 0
					for i, k := range keys {
						r, err := direct.Peek(ctx, k)
						if err != nil {
							t.Fatalf("Peek(%q) past the proxy: %v", k, err)
						}
						n := before[i] - r.Remaining
						total += n
						if n > 1 {
							consumed[k] = n
						}
					}
					st := sh.stats()
					t.Logf("%d of %d calls failed, %d units consumed; %d commands alone, %d pipelines", failed, callers, total, st.singles, st.pipelines)
					if len(consumed) != 0 {
						t.Errorf("one call consumed more than one unit, per key: %v; go-redis sent a script again", consumed)
					}
					if total == 0 {
						t.Errorf("no script ran while replies were lost: the test proves nothing")
					}
					waitHealthy(t, lim)
				})
			}
		}
	}
}

// WithTimeout bounds each caller's wait when calls are batched: on a Redis
// whose replies are held back, with calls queued behind sends in flight and
// pipelines in flight themselves, every call returns ErrTimeout within its
// timeout (plus slack), reported once to OnError; after the fault heals,
// decisions come back.
func TestTransportTimeoutPerCallerUnderBatching(t *testing.T) {
	const timeout = 150 * time.Millisecond
	const slack = time.Second
	// A read timeout longer than the limiter's timeout and its slack: sends
	// in flight outlive their callers, yet end during the fault, so that
	// queued calls go out as pipelines and stall in turn.
	readTimeout, run := 1500*time.Millisecond, 2*time.Second
	if testing.Short() {
		readTimeout, run = 400*time.Millisecond, 600*time.Millisecond
	}
	for _, ck := range clientKinds {
		t.Run(ck.name, func(t *testing.T) {
			t.Cleanup(leakcheck.Goroutines(t))
			ctx := context.Background()
			s := redistest.Start(t)
			p := faultproxy.Start(t, s.Addr())
			opts := append([]func(*redis.Options){func(o *redis.Options) { o.ReadTimeout = readTimeout }}, ck.opts...)
			c := redistest.NewClient(t, p.Addr(), opts...)
			sh := &shape{}
			c.AddHook(sh)
			var log errLog
			lim, err := redislimit.New(c, redislimit.FixedWindow(1<<30, time.Hour), redislimit.WithTimeout(timeout),
				redislimit.WithOnError(log.onError), redislimit.WithPrefix(testPrefix(t)))
			if err != nil {
				t.Fatal(err)
			}
			// An open breaker would answer ErrCircuitOpen without a send;
			// this test is about sends.
			redislimit.SetBreaker(lim, 1<<30, redislimit.BreakerCooldown)
			if _, err := lim.Allow(ctx, "warm"); err != nil {
				t.Fatal(err)
			}
			sh.reset()

			p.StallReplies()
			var calls atomic.Int64
			var worst atomic.Int64
			var errs firstErrors
			stop := time.Now().Add(run)
			hammer(32, func(w int) {
				for time.Now().Before(stop) {
					start := time.Now()
					r, err := lim.Allow(ctx, "w"+strconv.Itoa(w))
					took := time.Since(start)
					calls.Add(1)
					for w := worst.Load(); int64(took) > w && !worst.CompareAndSwap(w, int64(took)); w = worst.Load() {
					}
					if !errors.Is(err, redislimit.ErrTimeout) || took > timeout+slack {
						errs.add("stalled: Allow = %+v, %v after %v; want ErrTimeout within %v + %v", r, err, took, timeout, slack)
					}
				}
			})
			st := sh.stats()
			t.Logf("%d calls on a stalled Redis, worst %v; %d sent alone, %d pipelines (longest %d)",
				calls.Load(), time.Duration(worst.Load()), st.singles, st.pipelines, st.longest)
			errs.report(t)
			if st.pipelines == 0 {
				t.Errorf("no pipeline was sent during the fault: batched sends went untested")
			}
			if n := int64(log.count()); n != calls.Load() {
				t.Errorf("OnError called %d times for %d timed-out calls", n, calls.Load())
			}

			p.Heal()
			waitHealthy(t, lim)
			var after firstErrors
			hammer(32, func(w int) {
				if r, err := lim.Allow(ctx, "after"+strconv.Itoa(w)); err != nil || !r.Allowed {
					after.add("healed: Allow = %+v, %v", r, err)
				}
			})
			after.report(t)
		})
	}
}

// A caller whose context is cancelled while its call waits in the queue
// gets context.Canceled at once, its call is never sent, and OnError does
// not hear of it.
func TestTransportCancelWhileQueued(t *testing.T) {
	for _, ck := range clientKinds {
		t.Run(ck.name, func(t *testing.T) {
			t.Cleanup(leakcheck.Goroutines(t))
			ctx := context.Background()
			s := redistest.Start(t)
			p := faultproxy.Start(t, s.Addr())
			c := redistest.NewClient(t, p.Addr(), ck.opts...)
			sh := &shape{}
			c.AddHook(sh)
			var log errLog
			lim, err := redislimit.New(c, redislimit.FixedWindow(1<<30, time.Hour), redislimit.WithTimeout(5*time.Second),
				redislimit.WithOnError(log.onError), redislimit.WithPrefix(testPrefix(t)))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := lim.Allow(ctx, "warm"); err != nil {
				t.Fatal(err)
			}
			sh.reset()

			// Calls whose replies are held take every send slot.
			p.StallReplies()
			var blockers sync.WaitGroup
			blocked := make([]outcome, redislimit.MaxInflight)
			for i := range blocked {
				blockers.Add(1)
				go func() {
					defer blockers.Done()
					r, err := lim.Allow(ctx, "blocker"+strconv.Itoa(i))
					blocked[i] = outcome{r: r, err: err}
				}()
			}
			waitUntil(t, 2*time.Second, "the blockers sent", func() bool { return sh.stats().singles == len(blocked) })

			cctx, cancel := context.WithCancel(ctx)
			got := make(chan outcome, 1)
			go func() {
				r, err := lim.Allow(cctx, "queued")
				got <- outcome{r: r, err: err}
			}()
			time.Sleep(50 * time.Millisecond) // let it join the queue
			cancelled := time.Now()
			cancel()
			var o outcome
			select {
			case o = <-got:
			case <-time.After(2 * time.Second):
				t.Fatal("a call cancelled while queued did not return within 2s")
			}
			took := time.Since(cancelled)
			if !errors.Is(o.err, context.Canceled) || !cmp.Equal(o.r, redislimit.Result{}) {
				t.Errorf("Allow cancelled while queued = %+v, %v; want context.Canceled", o.r, o.err)
			}
			if took > time.Second {
				t.Errorf("Allow returned %v after its context was cancelled, want at once (its timeout is 5s)", took)
			}

			p.Heal() // the blockers get their replies
			blockers.Wait()
			for i, b := range blocked {
				if b.err != nil || !b.r.Allowed {
					t.Errorf("blocker %d, its reply held then released = %+v, %v; want allowed", i, b.r, b.err)
				}
			}
			if n := log.count(); n != 0 {
				t.Errorf("OnError called %d times (last %v), want none", n, log.last())
			}
			// Let the slots' release hand the queue (the cancelled call) to a
			// batch, which must drop it.
			time.Sleep(50 * time.Millisecond)
			if st := sh.stats(); st.singles != len(blocked) || st.pipelines != 0 {
				t.Errorf("after the cancel: %d commands sent alone and %d pipelines; want the %d blockers alone and nothing else", st.singles, st.pipelines, len(blocked))
			}
		})
	}
}

// go-redis's AutoPipeliner, passed to New, is a Scripter like any other:
// decisions are right, limits hold exactly under 32 goroutines, and
// SCRIPT FLUSH costs nothing but EVALs. The limiter does not batch its
// calls itself; the AutoPipeliner does.
func TestAutoPipeliner(t *testing.T) {
	t.Cleanup(leakcheck.Goroutines(t))
	const limit, workers = 20, 32
	ctx := context.Background()
	forEachBatchBackend(t, func(t *testing.T, b batchBackend) {
		if b.name == "redis-ring" {
			t.Skip("go-redis has no AutoPipeline for a Ring (ErrRingAutoPipelineUnsupported)")
		}
		c := b.client(t)
		ap, err := c.AutoPipeline()
		if err != nil {
			t.Fatalf("AutoPipeline: %v", err)
		}
		t.Cleanup(func() { _ = ap.Close() })
		for _, row := range algtest.Rows {
			t.Run(row.Name, func(t *testing.T) {
				lim := newRedisLimiter(t, ap, row.New(3, time.Hour), nil)
				for i, want := range []redislimit.Result{
					{Allowed: true, Limit: 3, Remaining: 2},
					{Allowed: true, Limit: 3, Remaining: 1},
					{Allowed: true, Limit: 3, Remaining: 0},
					{Allowed: false, Limit: 3, Remaining: 0},
				} {
					r, err := lim.Allow(ctx, "steps")
					if err != nil {
						t.Fatalf("Allow #%d: %v", i, err)
					}
					if diff := cmp.Diff(want, r, cmpopts.IgnoreFields(redislimit.Result{}, "RetryAfter", "ResetAfter", "Parts")); diff != "" {
						t.Errorf("Allow #%d (-want +got):\n%s", i, diff)
					}
					if !r.Allowed && r.RetryAfter <= 0 {
						t.Errorf("Allow #%d denied with RetryAfter %v", i, r.RetryAfter)
					}
				}

				if err := b.flushScripts(ctx); err != nil {
					t.Fatal(err)
				}
				if r, err := lim.Allow(ctx, "after-flush"); err != nil || !r.Allowed {
					t.Errorf("Allow after SCRIPT FLUSH = %+v, %v; want allowed", r, err)
				}

				lim = newRedisLimiter(t, ap, row.New(limit, time.Hour), nil)
				hot := b.keys("hot", 2)
				admitted := make([]atomic.Int64, len(hot))
				var errs firstErrors
				stop := make(chan struct{})
				flushed := make(chan int)
				go func() {
					n := 0
					defer func() { flushed <- n }()
					for {
						if err := b.flushScripts(ctx); err != nil {
							errs.add("SCRIPT FLUSH: %v", err)
							return
						}
						n++
						select {
						case <-stop:
							return
						case <-time.After(5 * time.Millisecond):
						}
					}
				}()
				hammer(workers, func(w int) {
					for i := 0; i < 10; i++ {
						k := (w + i) % len(hot)
						r, err := lim.Allow(ctx, hot[k])
						if err != nil {
							errs.add("Allow(%q): %v", hot[k], err)
						} else if r.Allowed {
							admitted[k].Add(1)
						}
					}
				})
				close(stop)
				t.Logf("%d SCRIPT FLUSHes during the load", <-flushed)
				errs.report(t)
				assertAdmitted(t, "admitted per key through an AutoPipeliner", hot, admitted, limit)
			})
		}
	})
}

// WithBatchSize(1) sends every call alone; a small size bounds every
// pipeline; a size below 1 is refused.
func TestBatchSize(t *testing.T) {
	t.Run("invalid", func(t *testing.T) {
		c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
		defer c.Close()
		for _, n := range []int{0, -1} {
			lim, err := redislimit.New(c, redislimit.FixedWindow(5, time.Minute), redislimit.WithBatchSize(n))
			if !errors.Is(err, redislimit.ErrInvalidConfig) || lim != nil {
				t.Errorf("New with WithBatchSize(%d) = %v, %v; want ErrInvalidConfig", n, lim, err)
			}
		}
	})
	t.Cleanup(leakcheck.Goroutines(t))
	const workers, rounds, limit = 64, 8, 10
	ctx := context.Background()
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		for _, size := range []int{1, 3} {
			t.Run("size-"+strconv.Itoa(size), func(t *testing.T) {
				var rt counter
				sh := &shape{}
				c := b.Client(t)
				c.AddHook(&rt)
				c.AddHook(sh)
				lim := newRedisLimiter(t, c, redislimit.SlidingLog(limit, time.Hour), nil, redislimit.WithBatchSize(size))
				if _, err := lim.Allow(ctx, "warm"); err != nil { // loads the script
					t.Fatal(err)
				}
				rt.reset()
				sh.reset()
				hot := numberedKeys("hot", 4)
				admitted := make([]atomic.Int64, len(hot))
				var errs firstErrors
				hammer(workers, func(w int) {
					for i := 0; i < rounds; i++ {
						k := (w + i) % len(hot)
						r, err := lim.Allow(ctx, hot[k])
						if err != nil {
							errs.add("Allow(%q): %v", hot[k], err)
						} else if r.Allowed {
							admitted[k].Add(1)
						}
					}
				})
				errs.report(t)
				for i, k := range hot {
					if n := admitted[i].Load(); n != limit {
						t.Errorf("key %q: %d admitted, want exactly %d", k, n, limit)
					}
				}
				decisions := workers * rounds
				trips, cmds := rt.snapshot()
				st := sh.stats()
				t.Logf("batch size %d: %d decisions in %d round trips (%v), %d script calls alone, %d pipelines (longest %d)",
					size, decisions, trips, cmds, st.singles, st.pipelines, st.longest)
				if size == 1 {
					// Round trips also count each new connection's handshake
					// (HELLO, CLIENT SETINFO), which go-redis runs through hooks.
					if st.pipelines != 0 || st.singles != decisions || st.evalshas != decisions || trips < decisions {
						t.Errorf("WithBatchSize(1): %d decisions made %d script calls alone and %d pipelines, %d EVALSHAs; want every decision alone",
							decisions, st.singles, st.pipelines, st.evalshas)
					}
					return
				}
				if st.pipelines == 0 || st.longest > size {
					t.Errorf("WithBatchSize(%d): %d pipelines, the longest of %d calls; want some, none longer than %d", size, st.pipelines, st.longest, size)
				}
			})
		}
	})
}

// When a cluster master is killed while batches are in flight, every
// caller gets its own decision or an error within its timeout: none hangs,
// none gets another's reply. Decisions come back once a replica took over.
func TestTransportClusterMasterKilledMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster failover takes seconds")
	}
	t.Cleanup(leakcheck.Goroutines(t))
	cl := redistest.StartCluster(t, 3, 1)
	ctx := context.Background()
	const big, timeout, workers = 1 << 20, time.Second, 64
	sh := &shape{}
	c := clusterClient(cl)
	c.AddHook(sh)
	lim, err := redislimit.New(c, redislimit.FixedWindow(big, time.Hour),
		redislimit.WithTimeout(timeout), redislimit.WithPrefix(testPrefix(t)))
	if err != nil {
		t.Fatal(err)
	}
	masters := cl.Masters()
	victim := masters[0]
	// Worker w decides on a key of its own, on master w%3.
	keys := make([]string, workers)
	onVictim := make([]bool, workers)
	for i, m := range masters {
		on := cl.KeysOn(m, "own", workers/len(masters)+1)
		for w := i; w < workers; w += len(masters) {
			keys[w], onVictim[w] = on[w/len(masters)], m == victim
		}
	}
	for _, k := range keys { // loads the scripts on the old masters
		if _, err := lim.Allow(ctx, k); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
	}
	sh.reset()

	var errs firstErrors
	var failed, decided atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		hammer(workers, func(w int) {
			prev := big - 1 // after the warm-up
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				r, err := lim.Allow(ctx, keys[w])
				took := time.Since(start)
				if took > timeout+margin {
					errs.add("worker %d: Allow took %v, want at most %v + %v", w, took, timeout, margin)
				}
				switch {
				case err != nil:
					failed.Add(1)
				case !r.Allowed || r.Limit != big:
					errs.add("worker %d: Allow(%q) = %+v, want allowed out of %d", w, keys[w], r, big)
				case !onVictim[w] && r.Remaining >= prev:
					// A lost reply may have consumed a unit, so Remaining may
					// drop by more than one; it never stays or rises. (The
					// victim's keys may: its replica may miss the last writes.)
					errs.add("worker %d: Allow(%q) Remaining %d after %d: a reply meant for another caller?", w, keys[w], r.Remaining, prev)
				default:
					decided.Add(1)
				}
				if err == nil {
					prev = r.Remaining
				}
				time.Sleep(time.Millisecond)
			}
		})
	}()

	time.Sleep(200 * time.Millisecond)
	killed := time.Now()
	cl.KillMaster(0)
	cl.WaitFailover(30 * time.Second)
	var back time.Duration
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := lim.Peek(ctx, keys[0]); err == nil {
			back = time.Since(killed)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // decisions on the promoted master, in batches
	close(stop)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("callers still waiting 10s after the load stopped:\n%s", buf[:runtime.Stack(buf, true)])
	}
	errs.report(t)
	st := sh.stats()
	t.Logf("master killed: %d decisions, %d errors; decisions on its keys back %v after the kill; %d pipelines (longest %d)",
		decided.Load(), failed.Load(), back.Round(time.Millisecond), st.pipelines, st.longest)
	if back == 0 {
		t.Fatal("decisions on the killed master's keys did not come back within 15s of the failover")
	}
	if failed.Load() == 0 {
		t.Error("no call failed: the kill went unnoticed, the test proves nothing")
	}
	if st.pipelines == 0 {
		t.Error("no pipeline was sent: batches went untested")
	}
	var after firstErrors
	hammer(workers, func(w int) {
		if r, err := lim.Allow(ctx, keys[w]); err != nil || !r.Allowed {
			after.add("after the failover: Allow(%q) = %+v, %v", keys[w], r, err)
		}
	})
	after.report(t)
}

// A cluster master whose replies stall costs only the decisions on its own
// keys: the other masters' keys keep deciding, as they do when every call
// is sent alone (WithBatchSize(1)).
//
// Batches are queued per node for that reason: a pipeline's Exec waits
// for every node it spans, so one that mixed nodes would hold the healthy
// masters' calls until the stalled one answered.
func TestTransportStalledShardSparesOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster and stalls it for a second")
	}
	t.Cleanup(leakcheck.Goroutines(t))
	// A node timeout far above the stall, so that no failover starts.
	cl := redistest.StartCluster(t, 3, 0, "--cluster-node-timeout", "20000")
	masters := cl.Masters()
	victim := masters[0]
	p := faultproxy.Start(t, victim.Addr())
	healthy := append(cl.KeysOn(masters[1], "ok", 8), cl.KeysOn(masters[2], "ok", 8)...)
	stalled := cl.KeysOn(victim, "stalled", 16)
	ctx := context.Background()
	for _, size := range []int{1, redislimit.DefaultBatchSize} {
		t.Run("batch-size-"+strconv.Itoa(size), func(t *testing.T) {
			// Connections to the victim go through the proxy.
			c := cl.Client(func(o *redis.ClusterOptions) {
				o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
					if addr == victim.Addr() {
						addr = p.Addr()
					}
					var d net.Dialer
					return d.DialContext(ctx, network, addr)
				}
			})
			const timeout = 300 * time.Millisecond
			lim, err := redislimit.New(c, redislimit.FixedWindow(1<<20, time.Hour), redislimit.WithTimeout(timeout),
				redislimit.WithBatchSize(size), redislimit.WithPrefix(testPrefix(t)))
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range append(append([]string{}, healthy...), stalled...) {
				if _, err := lim.Allow(ctx, k); err != nil {
					t.Fatalf("warm-up: %v", err)
				}
			}
			p.StallReplies()
			defer p.Heal()
			var decided, stalledFailed atomic.Int64
			var errs firstErrors
			stop := time.Now().Add(time.Second)
			hammer(32, func(w int) {
				for time.Now().Before(stop) {
					start := time.Now()
					key, onVictim := healthy[w/2], false
					if w%2 == 1 {
						key, onVictim = stalled[w/2], true
					}
					_, err := lim.Allow(ctx, key)
					switch took := time.Since(start); {
					case took > timeout+margin:
						errs.add("Allow(%q) took %v, want at most %v + %v", key, took, timeout, margin)
					case onVictim && err != nil:
						stalledFailed.Add(1)
					case err != nil:
						errs.add("Allow(%q) on a healthy master: %v", key, err)
					default:
						decided.Add(1)
					}
					time.Sleep(time.Millisecond)
				}
			})
			t.Logf("one master stalled, batch size %d: %d decisions on the healthy masters, %d errors; %d errors on the stalled one",
				size, decided.Load(), errs.count(), stalledFailed.Load())
			errs.report(t)
			if stalledFailed.Load() == 0 {
				t.Error("no call on the stalled master failed: the test proves nothing")
			}
		})
	}
}

// A lone call on a default client whose caller gave up while the call
// waited for a pooled connection is never sent: the limiter's deadline
// bounds go-redis's pool wait.
func TestTransportNotSentAfterGivingUp(t *testing.T) {
	t.Cleanup(leakcheck.Goroutines(t))
	ctx := context.Background()
	s := redistest.Start(t)
	c := redistest.NewClient(t, s.Addr(), func(o *redis.Options) { o.PoolSize, o.ReadTimeout = 1, 5*time.Second })
	lim, err := redislimit.New(c, redislimit.FixedWindow(10, time.Minute), redislimit.WithTimeout(100*time.Millisecond), redislimit.WithPrefix(testPrefix(t)))
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan struct{})
	go func() {
		defer close(held)
		c.BLPop(ctx, time.Second, testPrefix(t)+"nolist") // holds the only connection
	}()
	time.Sleep(100 * time.Millisecond)
	if _, err := lim.Allow(ctx, "k"); !errors.Is(err, redislimit.ErrTimeout) {
		t.Errorf("Allow with the pool exhausted: %v, want ErrTimeout", err)
	}
	<-held
	time.Sleep(100 * time.Millisecond) // a late send would have run by now
	if n := keysUnder(t, c); n != 0 {
		t.Errorf("%d keys written: the call went out after its caller gave up", n)
	}
}

// assertAdmitted checks that each of keys admitted exactly limit calls, as
// counted in admitted (by key index).
func assertAdmitted(t *testing.T, what string, keys []string, admitted []atomic.Int64, limit int) {
	t.Helper()
	got := map[string]int64{}
	want := map[string]int64{}
	for i, k := range keys {
		got[k], want[k] = admitted[i].Load(), int64(limit)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s, limit %d (-want +got):\n%s", what, limit, diff)
	}
}
