package peers

import (
	"context"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/bench/internal/harness"
)

// openRedisRate is redis_rate's counterpart of harness.OpenBucket: a GCRA
// bucket of 1,000,000 a second, burst 1,000,000.
var openRedisRate = redis_rate.Limit{Rate: 1_000_000, Burst: 1_000_000, Period: time.Second}

// BenchmarkThroughput measures decisions/s by exactly 1, 8 and 64
// goroutines (g1, g8, g64) spread uniformly over 10,000 keys of a limit
// that never denies, each subject on a go-redis client built with default
// options, or the rueidis subjects on a rueidis client of their own
// (rueidis's defaults, client-side caching off), in this one process:
//
//   - redislimit: default options (concurrent decisions share pipelines);
//   - redislimit-batch1: WithBatchSize(1), every decision sent alone;
//   - redislimit-autopipeline: the limiter on go-redis's AutoPipeliner
//     (Client.AutoPipeline), which batches instead of redislimit;
//   - redis_rate: go-redis/redis_rate/v10's Allow;
//   - rueidislimiter: rueidis/rueidislimiter's Allow, a fixed window of
//     2^40 calls an hour (see the package comment for what its figures
//     measure);
//   - rueidis-script: redislimit's token-bucket script, key and ARGV,
//     exactly as a redislimit Limiter sends them, run by rueidis's
//     Lua.Exec: redislimit's work in Redis on rueidis's transport.
//
// The token bucket is harness.OpenBucket for every subject but
// redis_rate's GCRA (the same rate and burst) and rueidislimiter. The
// rueidis subjects' round trips are the commands they send: rueidis
// pipelines concurrent commands on its connection by itself, which the
// count cannot see. Compare with BenchmarkCeiling, the same script driven
// by redis-benchmark.
func BenchmarkThroughput(b *testing.B) {
	b.Logf("target: %s", target.Describe())
	alg := harness.OpenBucket()
	for _, s := range []struct {
		name    string
		subject harness.Subject
	}{
		{"redislimit", harness.LimiterSubject(alg)},
		{"redislimit-batch1", harness.LimiterSubject(alg, redislimit.WithBatchSize(1))},
		{"redislimit-autopipeline", harness.AutoPipelineSubject(alg)},
		{"redis_rate", redisRateOpen()},
		{"rueidislimiter", rueidisLimiterOpen()},
		{"rueidis-script", rueidisScript()},
	} {
		b.Run(s.name, func(b *testing.B) { harness.Throughput(b, target, s.subject) })
	}
}

// redisRateOpen is redis_rate's subject for BenchmarkThroughput: every call
// allowed, with the Remaining of an open bucket.
func redisRateOpen() harness.Subject {
	return harness.Subject{
		Allowed: true,
		Bind: func(c *redis.Client) (harness.Decide, error) {
			l := redis_rate.NewLimiter(c)
			return func(ctx context.Context, key string) (bool, error) {
				r, err := l.Allow(ctx, key, openRedisRate)
				if err != nil {
					return false, err
				}
				return r.Allowed == 1 && r.Remaining > 0, nil
			}, nil
		},
	}
}

// BenchmarkCeiling measures the Redis-bound ceiling of the decisions of
// BenchmarkThroughput: redis-benchmark -P 64 running redislimit's
// token-bucket script by EVALSHA on the same server, as calls/s. It
// skips when redis-benchmark is not installed.
func BenchmarkCeiling(b *testing.B) {
	b.Run("redis-benchmark-P64", func(b *testing.B) { harness.Ceiling(b, target) })
}
