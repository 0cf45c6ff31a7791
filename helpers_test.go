package redislimit_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// epoch is where fake clocks start.
var epoch = algtest.Epoch

// counter is a go-redis hook that counts the commands a client sends, by
// name, and the round trips.
type counter struct {
	mu         sync.Mutex
	roundTrips int
	cmds       map[string]int
}

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.mu.Lock()
		c.roundTrips++
		if c.cmds == nil {
			c.cmds = map[string]int{}
		}
		c.cmds[strings.ToUpper(cmd.Name())]++
		c.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.mu.Lock()
		c.roundTrips++
		for _, cmd := range cmds {
			if c.cmds == nil {
				c.cmds = map[string]int{}
			}
			c.cmds[strings.ToUpper(cmd.Name())]++
		}
		c.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (c *counter) snapshot() (int, map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int, len(c.cmds))
	for k, v := range c.cmds {
		m[k] = v
	}
	return c.roundTrips, m
}

func (c *counter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.roundTrips, c.cmds = 0, nil
}

// newLimiter returns a limiter on a fresh client of b, with a fake clock
// when clk is not nil.
func newLimiter(t *testing.T, b redistest.Backend, alg redislimit.Algorithm, clk *clock.Fake, opts ...redislimit.Option) (*redislimit.Limiter, *redis.Client) {
	t.Helper()
	c := b.Client(t)
	return newRedisLimiter(t, c, alg, clk, opts...), c
}

// newRedisLimiter returns a limiter on c with the running test's prefix, a
// fake clock when clk is not nil, and a timeout long enough that a loaded
// machine never turns a slow call into an error: these tests are about
// decisions, not latency.
func newRedisLimiter(t *testing.T, c redis.Scripter, alg redislimit.Algorithm, clk *clock.Fake, opts ...redislimit.Option) *redislimit.Limiter {
	t.Helper()
	opts = append([]redislimit.Option{redislimit.WithPrefix(testPrefix(t)), redislimit.WithTimeout(time.Minute)}, opts...)
	if clk != nil {
		opts = append(opts, redislimit.WithClock(clk.Now))
	}
	lim, err := redislimit.New(c, alg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return lim
}

// limiterBackend is where the limiters of a conformance test keep their
// state: a Redis (embedded, real, or any other a test adds) or this
// process's memory.
type limiterBackend struct {
	name string
	// client returns a new client of the backend's Redis, closed when the
	// test ends; nil for an in-process backend.
	client func(t *testing.T) redis.UniversalClient
}

// limiterBackends runs f as a subtest on every backend: miniredis, a real
// redis-server, a real three-master Redis Cluster, a ring of two real
// redis-servers and the in-process limiter.
func limiterBackends(t *testing.T, f func(t *testing.T, b limiterBackend)) {
	t.Helper()
	redistest.ForEach(t, func(t *testing.T, rb redistest.Backend) {
		f(t, limiterBackend{name: rb.Name, client: func(t *testing.T) redis.UniversalClient { return rb.Client(t) }})
	})
	t.Run("redis-cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t, 3, 0)
		f(t, limiterBackend{name: "redis-cluster", client: func(t *testing.T) redis.UniversalClient { return cl.Client() }})
	})
	t.Run("redis-ring", func(t *testing.T) {
		ring, _ := redistest.StartRing(t, 2)
		f(t, limiterBackend{name: "redis-ring", client: func(t *testing.T) redis.UniversalClient { return ring }})
	})
	t.Run("in-process", func(t *testing.T) { f(t, limiterBackend{name: "in-process"}) })
}

// inspectable reports whether the backend's Redis keys can be read.
func (b limiterBackend) inspectable() bool { return b.client != nil }

// skipUnlessRuns skips the test on the in-process backend when row's
// algorithm does not run in process.
func (b limiterBackend) skipUnlessRuns(t *testing.T, row algtest.Row) {
	t.Helper()
	if b.client == nil && !row.Local {
		t.Skipf("%s does not run in process", row.Name)
	}
}

// needRedis skips the test on a backend without Redis, saying why, and
// otherwise returns a new client.
func (b limiterBackend) needRedis(t *testing.T, why string) redis.UniversalClient {
	t.Helper()
	if b.client == nil {
		t.Skipf("%s backend has no Redis: %s", b.name, why)
	}
	return b.client(t)
}

// newLimiter returns a limiter for alg on the backend, with a fake clock
// when clk is not nil, and its client (nil for an in-process backend).
func (b limiterBackend) newLimiter(t *testing.T, alg redislimit.Algorithm, clk *clock.Fake, opts ...redislimit.Option) (*redislimit.Limiter, redis.UniversalClient) {
	t.Helper()
	if b.client == nil {
		if clk != nil {
			opts = append(opts, redislimit.WithClock(clk.Now))
		}
		lim, err := redislimit.NewLocal(alg, opts...)
		if err != nil {
			t.Fatalf("NewLocal: %v", err)
		}
		return lim, nil
	}
	c := b.client(t)
	return newRedisLimiter(t, c, alg, clk, opts...), c
}

// step is one call in a step test: move the clock by Advance, then call
// AllowN with cost N (or Peek when Peek is set) and expect Want.
type step = algtest.Step

// allowed, denied and whole build the Results that steps expect.
var (
	allowed = algtest.Allowed
	denied  = algtest.Denied
	whole   = algtest.Whole
)

func runSteps(t *testing.T, lim *redislimit.Limiter, clk *clock.Fake, key string, steps []step) {
	t.Helper()
	ctx := context.Background()
	var elapsed time.Duration
	for i, s := range steps {
		clk.Advance(s.Advance)
		elapsed += s.Advance
		var got redislimit.Result
		var err error
		call := "AllowN"
		if s.Peek {
			call = "Peek"
			got, err = lim.Peek(ctx, key)
		} else {
			got, err = lim.AllowN(ctx, key, s.N)
		}
		if err != nil {
			t.Fatalf("step %d: %s(ctx, %q, %d) at +%v: %v", i, call, key, s.N, elapsed, err)
		}
		if diff := cmp.Diff(s.Want, got); diff != "" {
			t.Errorf("step %d: %s(ctx, %q, %d) at +%v = %+v, want %+v (-want +got)\n%s", i, call, key, s.N, elapsed, got, s.Want, diff)
		}
	}
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	p, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// testPrefix returns a key prefix unique to the running test, so that
// tests sharing a server never see each other's keys.
func testPrefix(t testing.TB) string {
	return strings.Map(func(r rune) rune {
		if strings.ContainsRune("*?[]\\{}", r) {
			return '_'
		}
		return r
	}, t.Name()) + ":"
}

// keysUnder returns how many keys start with the running test's prefix.
// On a cluster or a ring it counts the keys of every node.
func keysUnder(t testing.TB, c redis.Cmdable) int {
	t.Helper()
	ctx := context.Background()
	pattern := testPrefix(t) + "*"
	var each func(context.Context, func(context.Context, *redis.Client) error) error
	switch cc := c.(type) {
	case *redis.ClusterClient:
		each = cc.ForEachMaster
	case *redis.Ring:
		each = cc.ForEachShard
	}
	if each != nil {
		var mu sync.Mutex
		n := 0
		err := each(ctx, func(ctx context.Context, m *redis.Client) error {
			keys, err := m.Keys(ctx, pattern).Result()
			mu.Lock()
			n += len(keys)
			mu.Unlock()
			return err
		})
		if err != nil {
			t.Fatalf("KEYS on every node: %v", err)
		}
		return n
	}
	keys, err := c.Keys(ctx, pattern).Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	return len(keys)
}

// flushScripts empties the script cache of every node of c.
func flushScripts(t testing.TB, c redis.UniversalClient) {
	t.Helper()
	ctx := context.Background()
	var err error
	if r, ok := c.(*redis.Ring); ok {
		err = r.ForEachShard(ctx, func(ctx context.Context, s *redis.Client) error { return s.ScriptFlush(ctx).Err() })
	} else {
		err = c.ScriptFlush(ctx).Err()
	}
	if err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
}

// countedServer starts a redis-server and returns a client of it whose
// commands and round trips a counter counts.
func countedServer(t *testing.T) (*redis.Client, *counter) {
	t.Helper()
	c := redistest.NewClient(t, redistest.Start(t).Addr())
	counting := &counter{}
	c.AddHook(counting)
	return c, counting
}
