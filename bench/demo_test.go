package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/bench/internal/harness"
	"github.com/redislimit/redislimit/internal/faultproxy"
)

// The demonstrations show, as tests that fail when the claim stops being
// true, what goes wrong with the usual hand-written alternatives and that
// redislimit does not go wrong the same way.

// errInjected is the fault the demonstrations inject.
var errInjected = errors.New("injected fault: connection lost before this command was sent")

type decisionKey struct{}

// decision counts the commands sent for one rate-limit decision.
type decision struct{ commands atomic.Int32 }

// faulty returns a context for one decision during which [dropAfterFirst]
// fails every command after the first.
func faulty(ctx context.Context) context.Context {
	return context.WithValue(ctx, decisionKey{}, new(decision))
}

// dropAfterFirst is a go-redis hook that, within a context made by
// [faulty], lets the first command through and fails every later one
// before it is sent: the process died, or its connection dropped, between
// two calls of one decision. A pipeline counts as one command.
type dropAfterFirst struct{}

func (dropAfterFirst) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

// drop counts a command (cmd) of the decision in ctx, and reports whether
// to fail it. The commands go-redis sends to set up a connection pass.
func (dropAfterFirst) drop(ctx context.Context, cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "client", "auth", "select":
		return false
	}
	d, ok := ctx.Value(decisionKey{}).(*decision)
	return ok && d.commands.Add(1) > 1
}

func (h dropAfterFirst) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.drop(ctx, cmd) {
			cmd.SetErr(errInjected)
			return errInjected
		}
		return next(ctx, cmd)
	}
}

func (h dropAfterFirst) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.drop(ctx, cmds[0]) {
			for _, c := range cmds {
				c.SetErr(errInjected)
			}
			return errInjected
		}
		return next(ctx, cmds)
	}
}

// faultyClient returns a client of the target with the [dropAfterFirst]
// hook.
func faultyClient(t *testing.T) *redis.Client {
	t.Helper()
	c := target.Client(t, nil, 4, nil)
	c.AddHook(dropAfterFirst{})
	return c
}

// pass lets d go by, for Redis's key expiry and for its TIME.
func pass(d time.Duration) {
	time.Sleep(d)
	if m := target.Mini(); m != nil {
		m.FastForward(d) // miniredis expires keys only when told
	}
}

// demoWindow is short so that the demonstrations can wait it out.
const demoWindow = 150 * time.Millisecond

// TestNaiveLostExpire shows the naive fixed window losing its EXPIRE: the
// counter is left without a TTL and denies its user for good. With the
// common variant (EXPIRE only when the count is 1) one lost EXPIRE is
// enough; the control cases, without the fault, expire and admit again.
func TestNaiveLostExpire(t *testing.T) {
	const limit = 3
	tests := []struct {
		name    string
		variant harness.Naive
		// lost is how many decisions, from the first, lose their second
		// command.
		lost int
		// wantStuck is whether the key is left without a TTL, denying the
		// user after the window has passed twice over.
		wantStuck bool
	}{
		{"expire-if-1/no-fault", harness.IncrExpireFirst, 0, false},
		{"expire-if-1/first-expire-lost", harness.IncrExpireFirst, 1, true},
		{"incr+expire/no-fault", harness.IncrExpire, 0, false},
		{"incr+expire/every-expire-lost", harness.IncrExpire, 1 << 30, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			c := faultyClient(t)
			admin := target.Admin()
			key := target.Key(t.Name())
			decide := tc.variant.Decide(c, limit, demoWindow)
			allow := func(i int) bool {
				dctx := ctx
				if i < tc.lost {
					dctx = faulty(ctx)
				}
				n, err := decide(dctx, key)
				if err != nil && !errors.Is(err, errInjected) {
					t.Fatalf("decision %d: %v", i+1, err)
				}
				// The count arrived before the EXPIRE failed: the naive
				// code decides on it, as application code does.
				return n >= 1 && n <= limit
			}
			for i := range limit + 1 {
				if got, want := allow(i), i < limit; got != want {
					t.Fatalf("decision %d allowed = %v, want %v", i+1, got, want)
				}
			}
			pass(2 * demoWindow)
			// The user comes back after two windows.
			if got := allow(limit + 1); got == tc.wantStuck {
				t.Errorf("decision after two windows allowed = %v, want %v", got, !tc.wantStuck)
			}
			ttl, err := admin.PTTL(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			n, err := admin.Get(ctx, key).Int64()
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.wantStuck && ttl != -1:
				t.Errorf("PTTL = %v, want -1 (no TTL)", ttl)
			case !tc.wantStuck && (ttl <= 0 || n != 1):
				t.Errorf("count %d, PTTL %v; want a fresh window: count 1 with a TTL", n, ttl)
			}
			if tc.wantStuck {
				t.Logf("after two windows: count %d and no TTL: denied until someone deletes the key", n)
			}
		})
	}
}

// TestScriptUnderLostCommands runs every redislimit algorithm under the
// same fault, on every decision: a decision is one EVALSHA, so nothing is
// lost, every key has a TTL, and the user is admitted again once the
// window has passed.
func TestScriptUnderLostCommands(t *testing.T) {
	const limit = 3
	algs := []struct {
		name string
		alg  redislimit.Algorithm
	}{
		{"fixed-window", redislimit.FixedWindow(limit, demoWindow)},
		{"sliding-log", redislimit.SlidingLog(limit, demoWindow)},
		{"token-bucket", redislimit.TokenBucket(limit, demoWindow, limit)},
	}
	for _, a := range algs {
		t.Run(a.name, func(t *testing.T) {
			ctx := context.Background()
			c := faultyClient(t)
			prefix := target.Key(t.Name()) + ":"
			l, err := redislimit.New(c, a.alg, redislimit.WithPrefix(prefix))
			if err != nil {
				t.Fatal(err)
			}
			// Load the script first: under the fault, the EVAL that
			// follows a NOSCRIPT would be the lost second command.
			if _, err := l.Peek(ctx, "warm-up"); err != nil {
				t.Fatal(err)
			}
			users := []string{"alice", "bob", "carol"}
			for _, u := range users {
				for i := range limit + 1 {
					r, err := l.Allow(faulty(ctx), u)
					if err != nil {
						t.Fatalf("%s decision %d under the fault: %v", u, i+1, err)
					}
					if want := i < limit; r.Allowed != want {
						t.Fatalf("%s decision %d allowed = %v, want %v", u, i+1, r.Allowed, want)
					}
				}
			}
			keys, err := target.Admin().Keys(ctx, prefix+"*").Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != len(users) {
				t.Errorf("keys under the prefix = %q, want one per user (%d)", keys, len(users))
			}
			for _, k := range keys {
				if err := harness.CheckTTL(ctx, target.Admin(), k, 2*demoWindow+redislimit.TTLMargin); err != nil {
					t.Error(err)
				}
			}
			pass(2 * demoWindow)
			for _, u := range users {
				r, err := l.Allow(faulty(ctx), u)
				if err != nil || !r.Allowed {
					t.Errorf("%s after the window: %+v, %v; want allowed", u, r, err)
				}
			}
		})
	}
}

// localLimiter is the in-process limiter of one app server: a map and a
// mutex, with a window longer than the test.
type localLimiter struct {
	mu     sync.Mutex
	counts map[string]int // guarded by mu
	limit  int
}

func (l *localLimiter) allow(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts[key] >= l.limit {
		return false
	}
	l.counts[key]++
	return true
}

// TestLimitAcrossServers sends one user's requests, concurrently, to
// several app servers. Limiters kept in each server's memory admit
// servers × limit; redislimit on one shared Redis admits exactly limit.
func TestLimitAcrossServers(t *testing.T) {
	const (
		servers  = 4
		limit    = 10
		requests = 30 // per server
	)
	// admitted sends requests requests per server, concurrently, and counts
	// the admitted ones.
	admitted := func(t *testing.T, allow []func() (bool, error)) int {
		t.Helper()
		var n atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, servers*requests)
		for _, a := range allow {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range requests {
					ok, err := a()
					if err != nil {
						errs <- err
						return
					}
					if ok {
						n.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		return int(n.Load())
	}

	t.Run("in-process", func(t *testing.T) {
		allow := make([]func() (bool, error), servers)
		for i := range allow {
			l := &localLimiter{counts: make(map[string]int), limit: limit}
			allow[i] = func() (bool, error) { return l.allow("user42"), nil }
		}
		if got, want := admitted(t, allow), servers*limit; got != want {
			t.Errorf("admitted %d of %d requests, want %d (%d servers × limit %d)", got, servers*requests, want, servers, limit)
		}
	})

	for _, a := range []struct {
		name string
		alg  redislimit.Algorithm
	}{
		{"fixed-window", redislimit.FixedWindow(limit, time.Hour)},
		{"sliding-log", redislimit.SlidingLog(limit, time.Hour)},
		{"token-bucket", redislimit.TokenBucket(1, time.Hour, limit)},
	} {
		t.Run("redislimit/"+a.name, func(t *testing.T) {
			ctx := context.Background()
			prefix := target.Key(t.Name()) + ":"
			allow := make([]func() (bool, error), servers)
			for i := range allow {
				// Each app server has its own client and limiter.
				l, err := redislimit.New(target.Client(t, nil, 4, nil), a.alg, redislimit.WithPrefix(prefix))
				if err != nil {
					t.Fatal(err)
				}
				allow[i] = func() (bool, error) {
					r, err := l.Allow(ctx, "user42")
					if err != nil {
						return false, fmt.Errorf("Allow: %w", err)
					}
					return r.Allowed, nil
				}
			}
			if got := admitted(t, allow); got != limit {
				t.Errorf("admitted %d of %d requests across %d servers, want exactly %d", got, servers*requests, servers, limit)
			}
		})
	}
}

// naiveCacheGet is the cache read found in much application code: any
// error is a miss.
func naiveCacheGet(ctx context.Context, c redis.Cmdable, key string) (string, bool) {
	v, err := c.Get(ctx, key).Result()
	if err != nil {
		return "", false
	}
	return v, true
}

// naiveGetOrLoad loads on every miss, so on every error, and ignores the
// write's error too.
func naiveGetOrLoad(ctx context.Context, c redis.Cmdable, key string, load func() string) string {
	if v, ok := naiveCacheGet(ctx, c, key); ok {
		return v
	}
	v := load()
	_ = c.Set(ctx, key, v, time.Hour).Err()
	return v
}

// TestCacheOutage cuts the cache's Redis off. The naive helper reports
// misses for values that are still in Redis and sends every read to the
// loader (the database behind the cache) without a word; redislimit's
// Cache returns the outage as an error and does not call the loader.
func TestCacheOutage(t *testing.T) {
	ctx := context.Background()
	proxy := faultproxy.Start(t, target.Addr)
	c := redis.NewClient(&redis.Options{
		Addr:               proxy.Addr(),
		MaxRetries:         -1,
		DialTimeout:        time.Second,
		DialerRetries:      1,
		DialerRetryTimeout: time.Millisecond,
		ReadTimeout:        time.Second,
	})
	t.Cleanup(func() { _ = c.Close() })
	prefix := target.Key(t.Name()) + ":"
	cache, err := redislimit.NewCache[string](c, redislimit.WithCachePrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	naiveKey := prefix + "naive:profile:42"
	if err := cache.Set(ctx, "profile:42", "alice", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, naiveKey, "alice", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	var loads int
	load := func() string { loads++; return "alice (from the database)" }

	// Healthy: both find the value.
	if v, ok := naiveCacheGet(ctx, c, naiveKey); !ok || v != "alice" {
		t.Fatalf("naive Get while healthy = %q, %v; want alice, true", v, ok)
	}
	if v, found, err := cache.Get(ctx, "profile:42"); err != nil || !found || v != "alice" {
		t.Fatalf("Cache.Get while healthy = %q, %v, %v; want alice, true, nil", v, found, err)
	}

	proxy.Refuse()
	proxy.CutAll()
	// The values are still in Redis; only this client cannot reach it.
	if n, err := target.Admin().Exists(ctx, naiveKey).Result(); err != nil || n != 1 {
		t.Fatalf("EXISTS on the server = %d, %v; want 1", n, err)
	}

	const reads = 5
	for range reads {
		if _, ok := naiveCacheGet(ctx, c, naiveKey); ok {
			t.Fatal("naive Get during the outage found the value, want a (false) miss")
		}
		naiveGetOrLoad(ctx, c, naiveKey, load)
	}
	if loads != reads {
		t.Errorf("naive GetOrLoad called the loader %d times during the outage, want %d (every read)", loads, reads)
	}
	t.Logf("naive helper during the outage: %d reads, %d misses reported, %d loads, no error", reads, reads, loads)

	loads = 0
	v, found, err := cache.Get(ctx, "profile:42")
	if err == nil || found {
		t.Errorf("Cache.Get during the outage = %q, found %v, err %v; want an error", v, found, err)
	}
	t.Logf("Cache.Get during the outage: %v", err)
	if _, err := cache.GetOrLoad(ctx, "profile:42", time.Hour, func(context.Context) (string, error) {
		return load(), nil
	}); err == nil {
		t.Error("Cache.GetOrLoad during the outage returned no error")
	}
	if loads != 0 {
		t.Errorf("Cache.GetOrLoad called the loader %d times during the outage, want 0", loads)
	}

	proxy.Heal()
	if v, found, err := cache.Get(ctx, "profile:42"); err != nil || !found || v != "alice" {
		t.Errorf("Cache.Get after the outage = %q, %v, %v; want alice, true, nil", v, found, err)
	}
}
