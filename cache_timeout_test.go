package redislimit_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/faultproxy"
	"github.com/redislimit/redislimit/internal/leakcheck"
	"github.com/redislimit/redislimit/internal/redistest"
)

// cacheHang is how long a Cache call may take on a Redis that never
// answers before a test calls it a hang: far above every timeout the tests
// set, far below go-redis's own 3s read and 5s dial timeouts. It catches
// a call that waits for go-redis, not a slow one.
const cacheHang = 2 * time.Second

// cacheOtherCmdable is a redis.Cmdable that is none of go-redis's client
// types, as a user's wrapper would be.
type cacheOtherCmdable struct{ redis.Cmdable }

// cacheClientKinds are the clients a Cache must bound its waits on, each
// built with go-redis's default options (but one) for addr.
var cacheClientKinds = []struct {
	name string
	new  func(t *testing.T, addr string) redis.Cmdable
}{
	{"default-client", func(t *testing.T, addr string) redis.Cmdable {
		return redistest.NewClient(t, addr)
	}},
	{"context-timeout-client", func(t *testing.T, addr string) redis.Cmdable {
		return redistest.NewClient(t, addr, func(o *redis.Options) { o.ContextTimeoutEnabled = true })
	}},
	{"cluster-client", func(t *testing.T, addr string) redis.Cmdable {
		// One node owning every slot: a plain server behind the proxy
		// serves it, and the client is a real *redis.ClusterClient.
		c := redis.NewClusterClient(&redis.ClusterOptions{
			ClusterSlots: func(context.Context) ([]redis.ClusterSlot, error) {
				return []redis.ClusterSlot{{Start: 0, End: 16383, Nodes: []redis.ClusterNode{{Addr: addr}}}}, nil
			},
		})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}},
	{"ring", func(t *testing.T, addr string) redis.Cmdable {
		// No heartbeat during the test: a shard marked down would fail
		// calls at once, which is not the path under test.
		c := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": addr}, HeartbeatFrequency: time.Hour})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}},
	{"other-cmdable", func(t *testing.T, addr string) redis.Cmdable {
		return cacheOtherCmdable{redistest.NewClient(t, addr)}
	}},
}

// On a Redis that accepts connections and never answers, every method
// returns an error wrapping ErrTimeout at the cache's timeout, on every
// kind of client, and passes it to OnError; a caller's earlier deadline
// ends its call sooner, with the context's error. After the fault heals,
// the cache works again.
func TestCacheTimeoutStalledRedis(t *testing.T) {
	const timeout = 200 * time.Millisecond
	for _, ck := range cacheClientKinds {
		t.Run(ck.name, func(t *testing.T) {
			t.Cleanup(leakcheck.Goroutines(t))
			s := redistest.Start(t)
			p := faultproxy.Start(t, s.Addr())
			rc := ck.new(t, p.Addr())
			var log cacheErrLog
			c := newCache[string](t, rc, redislimit.WithCacheTimeout(timeout), redislimit.WithCacheOnError(log.onError))
			serving := newCache[string](t, rc, redislimit.WithCacheTimeout(timeout), redislimit.WithCacheOnError(log.onError),
				redislimit.WithCacheLoadOnError(), redislimit.WithCachePrefix("serving:"))
			load := func(context.Context) (string, error) { return "from db", nil }
			p.Stall()

			ctx := context.Background()
			short := func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, timeout/4)
			}
			calls := []struct {
				name string
				want error
				call func() error
			}{
				{"Get", redislimit.ErrTimeout, func() error { _, _, err := c.Get(ctx, "k"); return err }},
				{"Set", redislimit.ErrTimeout, func() error { return c.Set(ctx, "k", "v", time.Minute) }},
				{"Delete", redislimit.ErrTimeout, func() error { return c.Delete(ctx, "k") }},
				{"GetOrLoad", redislimit.ErrTimeout, func() error { _, err := c.GetOrLoad(ctx, "k", time.Minute, load); return err }},
				{"GetMany", redislimit.ErrTimeout, func() error { _, err := c.GetMany(ctx, []string{"a", "b"}); return err }},
				{"SetMany", redislimit.ErrTimeout, func() error { return c.SetMany(ctx, map[string]string{"a": "1", "b": "2"}, time.Minute) }},
				{"GetOrLoad with WithCacheLoadOnError", nil, func() error {
					v, err := serving.GetOrLoad(ctx, "k", time.Minute, load)
					if err == nil && v != "from db" {
						return errors.New("served " + strconv.Quote(v) + ", want the loaded value")
					}
					return err
				}},
				{"Get, caller's deadline first", context.DeadlineExceeded, func() error {
					ctx, cancel := short()
					defer cancel()
					_, _, err := c.Get(ctx, "k")
					return err
				}},
				{"GetOrLoad, caller's deadline first", context.DeadlineExceeded, func() error {
					ctx, cancel := short()
					defer cancel()
					_, err := c.GetOrLoad(ctx, "k", time.Minute, load)
					return err
				}},
			}
			var errs firstErrors
			var wg sync.WaitGroup
			for _, call := range calls {
				wg.Go(func() {
					start := time.Now()
					err := call.call()
					took := time.Since(start)
					switch {
					case call.want == nil && err != nil:
						errs.add("%s on a stalled Redis = %v after %v, want no error", call.name, err, took)
					case call.want != nil && !errors.Is(err, call.want):
						errs.add("%s on a stalled Redis = %v after %v, want %v", call.name, err, took, call.want)
					case took > cacheHang:
						errs.add("%s on a stalled Redis returned after %v, want within %v", call.name, took, cacheHang)
					}
				})
			}
			wg.Wait()
			errs.report(t)
			// One for each call that ran out of the cache's timeout: six
			// methods, and the read of the serving GetOrLoad.
			logged, _ := log.take()
			if len(logged) != 7 {
				t.Errorf("OnError called %d times, want 7: %v", len(logged), logged)
			}
			for _, err := range logged {
				if !errors.Is(err, redislimit.ErrTimeout) {
					t.Errorf("OnError got %v, want an error wrapping ErrTimeout", err)
				}
			}

			p.Heal()
			waitUntil(t, 5*time.Second, "Set after the fault healed", func() bool {
				return c.Set(ctx, "after", "v", time.Minute) == nil
			})
			if v, found, err := c.Get(ctx, "after"); v != "v" || !found || err != nil {
				t.Errorf("Get after the fault healed = (%q, %v, %v), want (\"v\", true, nil)", v, found, err)
			}
		})
	}
}

// The case as a user met it: go-redis's default options and the cache's,
// a Redis that accepts connections and never answers. Get returns at the
// default timeout (500ms) with ErrTimeout, or at its context's 200ms
// deadline, instead of after go-redis's 5s.
func TestCacheTimeoutDefaults(t *testing.T) {
	t.Cleanup(leakcheck.Goroutines(t))
	s := redistest.Start(t)
	p := faultproxy.Start(t, s.Addr())
	c := newCache[string](t, redistest.NewClient(t, p.Addr()))
	p.Stall()

	start := time.Now()
	_, _, err := c.Get(context.Background(), "k")
	if took := time.Since(start); !errors.Is(err, redislimit.ErrTimeout) || took > cacheHang {
		t.Errorf("Get without a deadline = %v after %v, want ErrTimeout within %v", err, took, cacheHang)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, _, err = c.Get(ctx, "k")
	if took := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || took > cacheHang {
		t.Errorf("Get with a 200ms deadline = %v after %v, want context.DeadlineExceeded within %v", err, took, cacheHang)
	}
}

// A client that ignores context deadlines leaves a call that timed out
// running; past MaxAbandoned of those, calls fail at once with
// ErrCircuitOpen and send nothing. Once Redis answers again, they end and
// calls go through.
func TestCacheAbandonedBound(t *testing.T) {
	t.Cleanup(leakcheck.Goroutines(t))
	s := redistest.Start(t)
	p := faultproxy.Start(t, s.Addr())
	// Enough connections for every abandoned call to hold one, so that
	// none ends early waiting for the pool.
	rc := redistest.NewClient(t, p.Addr(), func(o *redis.Options) { o.PoolSize = 2 * redislimit.MaxAbandoned })
	var rt cacheCmdCounter
	rc.AddHook(&rt)
	c := newCache[string](t, rc, redislimit.WithCacheTimeout(50*time.Millisecond))
	ctx := context.Background()
	p.Stall()

	// A call its caller gave up on before a worker sent it is never sent
	// and does not count, so on a busy machine one round of Gets may fall
	// short of the bound: send rounds until the sent ones fill it.
	var errs firstErrors
	for round, i := 0, 0; redislimit.CacheAbandoned(c) < redislimit.MaxAbandoned; round++ {
		if round == 20 {
			t.Fatalf("after %d rounds of Gets, %d abandoned calls, want %d", round, redislimit.CacheAbandoned(c), redislimit.MaxAbandoned)
		}
		var wg sync.WaitGroup
		for range redislimit.MaxAbandoned - redislimit.CacheAbandoned(c) {
			key := "k" + strconv.Itoa(i)
			i++
			wg.Go(func() {
				if _, _, err := c.Get(ctx, key); !errors.Is(err, redislimit.ErrTimeout) && !errors.Is(err, redislimit.ErrCircuitOpen) {
					errs.add("Get on a stalled Redis = %v, want ErrTimeout", err)
				}
			})
		}
		wg.Wait()
		// A worker that comes to a call given up on lowers the count
		// soon after; wait until it holds still.
		for prev := -1; prev != redislimit.CacheAbandoned(c); {
			prev = redislimit.CacheAbandoned(c)
			time.Sleep(20 * time.Millisecond)
		}
	}
	errs.report(t)
	if n := redislimit.CacheAbandoned(c); n != redislimit.MaxAbandoned {
		t.Fatalf("%d abandoned calls, want %d", n, redislimit.MaxAbandoned)
	}
	sent := rt.n.Load()
	if _, _, err := c.Get(ctx, "one-more"); !errors.Is(err, redislimit.ErrCircuitOpen) || errors.Is(err, redislimit.ErrTimeout) {
		t.Errorf("Get past the bound = %v, want ErrCircuitOpen", err)
	}
	if n := rt.n.Load() - sent; n != 0 {
		t.Errorf("Get past the bound sent %d commands, want none", n)
	}

	p.Heal()
	waitUntil(t, 10*time.Second, "the abandoned calls to end", func() bool { return redislimit.CacheAbandoned(c) == 0 })
	if _, found, err := c.Get(ctx, "one-more"); found || err != nil {
		t.Errorf("Get after the abandoned calls ended = (_, %v, %v), want a miss", found, err)
	}
}

// A GetOrLoad caller waiting for another's load gives up at its own
// deadline, while the load goes on and fills the cache.
func TestCacheGetOrLoadWaiterDeadline(t *testing.T) {
	m := redistest.Mini(t)
	c := newCache[string](t, redistest.NewClient(t, m.Addr()))
	started, release := make(chan struct{}), make(chan struct{})
	loaded := make(chan error, 1)
	go func() {
		_, err := c.GetOrLoad(context.Background(), "k", time.Minute, func(context.Context) (string, error) {
			close(started)
			<-release
			return "fresh", nil
		})
		loaded <- err
	}()
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.GetOrLoad(ctx, "k", time.Minute, func(context.Context) (string, error) {
		t.Error("the waiter started a second load")
		return "", nil
	})
	if took := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || took > cacheHang {
		t.Errorf("waiter with a 50ms deadline = %v after %v, want context.DeadlineExceeded within %v", err, took, cacheHang)
	}

	close(release)
	if err := <-loaded; err != nil {
		t.Fatalf("first caller: %v", err)
	}
	if v, found, err := c.Get(context.Background(), "k"); v != "fresh" || !found || err != nil {
		t.Errorf("Get after the load = (%q, %v, %v), want (\"fresh\", true, nil)", v, found, err)
	}
}
