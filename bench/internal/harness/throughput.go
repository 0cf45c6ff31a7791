package harness

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
)

// SpreadKeys is how many keys a throughput benchmark spreads its decisions
// over, uniformly.
const SpreadKeys = 10_000

// SpreadGoroutines are the goroutine counts of the throughput benchmarks:
// exactly that many goroutines make the decisions, whatever GOMAXPROCS is.
var SpreadGoroutines = []int{1, 8, 64}

// OpenBucket returns the token bucket of the throughput benchmarks:
// 1,000,000 tokens a second, burst 1,000,000. No benchmark comes near
// denying a call on any of [SpreadKeys] keys.
func OpenBucket() redislimit.Algorithm {
	return redislimit.TokenBucket(1_000_000, time.Second, 1_000_000)
}

// LimiterSubject returns the subject of a redislimit Limiter running alg,
// with opts, on the benchmark's client; every call must be allowed. The
// limiter's timeout is raised (see benchTimeout); every other option is
// the default unless opts sets it.
func LimiterSubject(alg redislimit.Algorithm, opts ...redislimit.Option) Subject {
	return Subject{
		Allowed: true,
		Bind: func(c *redis.Client) (Decide, error) {
			return decideOn(c, alg, opts)
		},
	}
}

// AutoPipelineSubject is [LimiterSubject] with the limiter on the
// client's go-redis AutoPipeliner (Client.AutoPipeline, the blocking face
// with its default options) instead of on the client: go-redis, not
// redislimit, batches the concurrent decisions.
func AutoPipelineSubject(alg redislimit.Algorithm, opts ...redislimit.Option) Subject {
	return Subject{
		Allowed: true,
		Bind: func(c *redis.Client) (Decide, error) {
			ap, err := c.AutoPipeline()
			if err != nil {
				return nil, fmt.Errorf("AutoPipeline: %w", err)
			}
			return decideOn(ap, alg, opts)
		},
	}
}

func decideOn(c redis.Scripter, alg redislimit.Algorithm, opts []redislimit.Option) (Decide, error) {
	l, err := redislimit.New(c, alg, append([]redislimit.Option{redislimit.WithTimeout(benchTimeout)}, opts...)...)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, key string) (bool, error) {
		r, err := l.Allow(ctx, key)
		return r.Allowed, err
	}, nil
}

// Throughput runs s as the sub-benchmarks "g1", "g8" and "g64": exactly
// that many goroutines make b.N decisions between them, the i-th on the
// (i mod [SpreadKeys])-th of SpreadKeys keys, on a client built with
// go-redis's default options (s.Options aside) or, with s.Dial, on the
// subject's own client. Besides what [Meter] reports, each reports
// decisions/s, client-cpu-usec/op (the CPU the benchmark process used per
// decision) and, on a real server,
// script-calls/op. Every call must report s.Allowed; on a real server
// every decision must have run a script in Redis (EVALSHA or EVAL) at
// least once, so that none was answered without Redis; and s.Prepare and
// s.Verify run on every key.
func Throughput(b *testing.B, t *Target, s Subject) {
	for _, g := range SpreadGoroutines {
		b.Run("g"+strconv.Itoa(g), func(b *testing.B) {
			d, c, ctr := bind(b, t, s, 0)
			keys := SpreadKeyNames(t, b.Name(), SpreadKeys)
			prepare(b, s, d, keys...)
			// Dial the connections and load the script, untimed, on a key
			// of its own (a subject with Dial opened its client already).
			warm(b, c, min(g, 10))
			if _, err := d(context.Background(), t.Key(b.Name()+"/warm")); err != nil {
				b.Fatal(err)
			}
			calls, scripts := Spread(b, t, ctr, g, keys, d, s.Allowed)
			if scripts >= 0 && scripts < int64(b.N) {
				b.Fatalf("%d decisions ran %d scripts in Redis: some were answered without Redis", b.N, scripts)
			}
			for i, k := range keys {
				verify(b, t, s, k, calls[i])
			}
		})
	}
}

// SpreadKeyNames returns n distinct keys unique to this process, named
// after name. It fails b unless they are distinct: a benchmark that meant
// to spread its calls must not run them all on one key.
func SpreadKeyNames(t *Target, name string, n int) []string {
	base := t.Key(name)
	keys := make([]string, n)
	seen := make(map[string]bool, n)
	for i := range keys {
		keys[i] = base + "/" + strconv.Itoa(i)
		seen[keys[i]] = true
	}
	if len(seen) != n {
		panic(fmt.Sprintf("harness: %d distinct keys of %d", len(seen), n))
	}
	return keys
}

// Spread times b.N decisions made by exactly g goroutines between them,
// the i-th of them by d on keys[i mod len(keys)], each of which must
// report want. It measures the section with a [Meter] on ctr (the
// counting hook of d's client) and also reports decisions/s, the
// process's CPU per decision (client-cpu-usec/op) and, on a
// real server, script-calls/op: the EVALSHA and EVAL calls Redis ran per
// decision, from INFO commandstats. It returns the decisions made on each
// key and the script calls Redis ran (-1 when not measured).
func Spread(b *testing.B, t *Target, ctr *Counter, g int, keys []string, d Decide, want bool) (calls []int64, scripts int64) {
	b.Helper()
	ctx := context.Background()
	n := int64(b.N)
	perKey := make([]atomic.Int64, len(keys))
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for !failed.Load() {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				k := int(i % int64(len(keys)))
				ok, err := d(ctx, keys[k])
				if err != nil {
					failed.Store(true)
					b.Errorf("decision %d: %v", i+1, err)
					return
				}
				if ok != want {
					failed.Store(true)
					b.Errorf("decision %d: allowed = %v, want %v", i+1, ok, want)
					return
				}
				perKey[k].Add(1)
			}
		}()
	}
	m := Measure(b, t, ctr)
	b.ResetTimer()
	cpu0, cpuOK := processCPU()
	began := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(began)
	cpu1, _ := processCPU()
	m.Done()
	if cpuOK {
		// The whole process's CPU: the client's, since the server runs
		// in a process of its own (miniredis aside).
		b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/1e3/float64(n), "client-cpu-usec/op")
	}
	if failed.Load() {
		b.FailNow()
	}
	b.ReportMetric(float64(n)/elapsed.Seconds(), "decisions/s")
	scripts = m.ScriptCalls()
	if scripts >= 0 {
		b.ReportMetric(float64(scripts)/float64(n), "script-calls/op")
	}
	calls = make([]int64, len(keys))
	var total int64
	for i := range perKey {
		calls[i] = perKey[i].Load()
		total += calls[i]
	}
	if total != n {
		b.Fatalf("%d decisions counted on the keys, want %d", total, n)
	}
	return calls, scripts
}
