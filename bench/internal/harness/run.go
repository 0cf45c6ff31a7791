package harness

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Goroutines is about how many goroutines a parallel benchmark runs (the
// next multiple of GOMAXPROCS), each on a key of its own; the client's pool
// has as many connections.
const Goroutines = 64

// Decide makes one decision for key (or sends one floor command) and
// reports whether it was allowed.
type Decide func(ctx context.Context, key string) (allowed bool, err error)

// Subject is what a benchmark measures: one limiter, naive variant or floor,
// with its fixture.
type Subject struct {
	// Bind returns the operation bound to a client made for one benchmark.
	Bind func(c *redis.Client) (Decide, error)
	// Options, when non-nil, adjusts the options of that client.
	Options func(*redis.Options)
	// Dial, when non-nil, takes the place of Bind (and Options) for a
	// subject on a client of another library: it opens that client to
	// addr, the target's loopback address, closes it in tb's cleanup,
	// counts each command the client sends in ctr with [Counter.Count],
	// and returns the operation bound to it.
	Dial func(tb testing.TB, addr string, ctr *Counter) (Decide, error)
	// Prepare, when non-nil, runs on each key before the timer starts (for
	// example, to saturate it).
	Prepare func(ctx context.Context, d Decide, key string) error
	// Allowed is what every timed call must report.
	Allowed bool
	// Verify, when non-nil, checks each key after the timer stops; calls is
	// the number of timed calls made on it. admin has no counting hook.
	Verify func(ctx context.Context, admin *redis.Client, key string, calls int64) error
}

// Run runs s as two sub-benchmarks: "seq", one goroutine on one key, and
// "par", about [Goroutines] goroutines each on its own key. Every timed call
// must report s.Allowed, and s.Verify must accept each key afterwards.
func Run(b *testing.B, t *Target, s Subject) {
	b.Run("seq", func(b *testing.B) { runSeq(b, t, s) })
	b.Run("par", func(b *testing.B) { runPar(b, t, s) })
}

// bind returns s's operation, on a go-redis client made for b with room
// for poolSize connections (0: go-redis's default) or, for a subject with
// Dial, on its own client; the go-redis client, nil for a subject with
// Dial; and the Counter of what the operation's client sends.
func bind(b *testing.B, t *Target, s Subject, poolSize int) (Decide, *redis.Client, *Counter) {
	b.Helper()
	ctr := new(Counter)
	if s.Dial != nil {
		d, err := s.Dial(b, t.Addr, ctr)
		if err != nil {
			b.Fatal(err)
		}
		return d, nil, ctr
	}
	c := t.Client(b, ctr, poolSize, s.Options)
	d, err := s.Bind(c)
	if err != nil {
		b.Fatal(err)
	}
	return d, c, ctr
}

func prepare(b *testing.B, s Subject, d Decide, keys ...string) {
	b.Helper()
	if s.Prepare == nil {
		return
	}
	for _, k := range keys {
		if err := s.Prepare(context.Background(), d, k); err != nil {
			b.Fatalf("prepare: %v", err)
		}
	}
}

func verify(b *testing.B, t *Target, s Subject, key string, calls int64) {
	b.Helper()
	if s.Verify == nil {
		return
	}
	if err := s.Verify(context.Background(), t.admin, key, calls); err != nil {
		b.Fatalf("fixture check after %d calls: %v", calls, err)
	}
}

func runSeq(b *testing.B, t *Target, s Subject) {
	ctx := context.Background()
	d, c, ctr := bind(b, t, s, 4)
	key := t.Key(b.Name())
	prepare(b, s, d, key)
	if c != nil {
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
	m := Measure(b, t, ctr)
	var calls int64
	for b.Loop() {
		ok, err := d(ctx, key)
		if err != nil {
			b.Fatal(err)
		}
		if ok != s.Allowed {
			b.Fatalf("call %d: allowed = %v, want %v", calls+1, ok, s.Allowed)
		}
		calls++
	}
	m.Done()
	verify(b, t, s, key, calls)
}

func runPar(b *testing.B, t *Target, s Subject) {
	ctx := context.Background()
	procs := runtime.GOMAXPROCS(0)
	par := (Goroutines + procs - 1) / procs
	n := par * procs
	b.SetParallelism(par)
	d, c, ctr := bind(b, t, s, n)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = t.Key(fmt.Sprintf("%s/%d", b.Name(), i))
	}
	prepare(b, s, d, keys...)
	warm(b, c, n)
	calls := make([]atomic.Int64, n)
	var next atomic.Int64
	m := Measure(b, t, ctr)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)-1) % n
		key := keys[i]
		var done int64
		defer func() { calls[i].Add(done) }()
		for pb.Next() {
			ok, err := d(ctx, key)
			if err != nil {
				b.Error(err)
				return
			}
			if ok != s.Allowed {
				b.Errorf("allowed = %v, want %v", ok, s.Allowed)
				return
			}
			done++
		}
	})
	m.Done()
	for i, k := range keys {
		verify(b, t, s, k, calls[i].Load())
	}
}

// warm opens n connections of c so that dialing is not timed; a nil c
// (a subject with its own client) has nothing to open.
func warm(b *testing.B, c *redis.Client, n int) {
	b.Helper()
	if c == nil {
		return
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.Ping(context.Background()).Err()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
}

// KeyMemory reports the Redis memory (MEMORY USAGE … SAMPLES 0, summed over
// every key whose name contains the user key) used by one user key after 100
// and after 1000 calls, as the metrics B/key@100 and B/key@1000. Every call
// must be allowed. It needs a real server and skips otherwise. The figures
// do not depend on b.N.
func KeyMemory(b *testing.B, t *Target, s Subject) {
	if !t.Real() {
		b.Skip("MEMORY USAGE needs a real Redis server")
	}
	ctx := context.Background()
	d, _, _ := bind(b, t, s, 2)
	key := t.Key(b.Name())
	b.StopTimer()
	var calls int64
	for _, at := range []int64{100, 1000} {
		for ; calls < at; calls++ {
			ok, err := d(ctx, key)
			if err != nil {
				b.Fatal(err)
			}
			if !ok {
				b.Fatalf("call %d denied; memory is measured on an allowed key", calls+1)
			}
		}
		bytes, nkeys, err := Memory(ctx, t.admin, key)
		if err != nil {
			b.Fatal(err)
		}
		if nkeys == 0 {
			b.Fatalf("no Redis key contains %q after %d calls", key, calls)
		}
		b.ReportMetric(float64(bytes), fmt.Sprintf("B/key@%d", at))
	}
	verify(b, t, s, key, calls)
}

// Memory returns the summed MEMORY USAGE (SAMPLES 0) of the keys whose names
// contain userKey, and how many there are.
func Memory(ctx context.Context, c *redis.Client, userKey string) (bytes int64, keys int, err error) {
	pattern := "*" + userKey + "*"
	iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		if !strings.Contains(k, userKey) {
			continue
		}
		n, err := c.MemoryUsage(ctx, k, 0).Result()
		if err != nil {
			return 0, 0, fmt.Errorf("MEMORY USAGE: %w", err)
		}
		bytes += n
		keys++
	}
	if err := iter.Err(); err != nil {
		return 0, 0, fmt.Errorf("SCAN: %w", err)
	}
	return bytes, keys, nil
}
