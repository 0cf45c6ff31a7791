package peers

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit/bench/internal/harness"
)

// BenchmarkLone measures a lone decision: exactly one goroutine spread
// over the keys of BenchmarkThroughput, so that no call ever waits for
// or joins another. Each subject runs on a client with go-redis's default
// options ("default": redislimit sends each call on a worker and stops
// waiting at its deadline, since the client ignores a context's deadline
// on socket reads) and on one with ContextTimeoutEnabled ("ctx": the call
// runs on the caller's goroutine, the deadline bound by the socket). Its
// ns/op and client-cpu-usec/op against redis_rate's on the same kind of
// client are what redislimit's timeout costs a lone caller.
func BenchmarkLone(b *testing.B) {
	b.Logf("target: %s", target.Describe())
	old := harness.SpreadGoroutines
	harness.SpreadGoroutines = []int{1}
	b.Cleanup(func() { harness.SpreadGoroutines = old })
	cte := func(o *redis.Options) { o.ContextTimeoutEnabled = true }
	alg := harness.OpenBucket()
	for _, client := range []struct {
		name string
		opts func(*redis.Options)
	}{{"default", nil}, {"ctx", cte}} {
		for _, s := range []struct {
			name    string
			subject harness.Subject
		}{
			{"redislimit", harness.LimiterSubject(alg)},
			{"redis_rate", redisRateOpen()},
		} {
			s.subject.Options = client.opts
			b.Run(client.name+"/"+s.name, func(b *testing.B) { harness.Throughput(b, target, s.subject) })
		}
	}
}
