package bench

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/redistest"
)

// BenchmarkScaleOut measures decisions over 10,000 keys with 64
// goroutines, on one redis-server and on a three-master Redis Cluster,
// each started for this benchmark on loopback. Compare the ops/s figures
// of one run: a cluster can only scale when Redis, not the client, is the
// bottleneck and the servers have cores to spare. "light" is Allow on a
// token bucket (a few µs of Redis CPU); "heavy" is AllowN(…, 20) on a
// sliding log (20 sorted-set entries per call, tens of µs of Redis CPU).
func BenchmarkScaleOut(b *testing.B) {
	const keys = 10000
	names := make([]string, keys)
	for i := range names {
		names[i] = "user-" + strconv.Itoa(i)
	}
	run := func(b *testing.B, client redis.Scripter, heavy bool) {
		alg, cost := redislimit.TokenBucket(1_000_000, time.Second, 1_000_000), 1
		if heavy {
			alg, cost = redislimit.SlidingLog(1<<20, time.Second), 20
		}
		lim, err := redislimit.New(client, alg, redislimit.WithPrefix("scaleout:"), redislimit.WithTimeout(10*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		for _, k := range names[:100] { // load the script everywhere first
			if _, err := lim.Allow(ctx, k); err != nil {
				b.Fatal(err)
			}
		}
		var next, denied atomic.Int64
		b.SetParallelism(32) // 64 goroutines on 2 cores
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r, err := lim.AllowN(ctx, names[next.Add(1)%keys], cost)
				if err != nil {
					b.Error(err)
					return
				}
				if !r.Allowed {
					denied.Add(1)
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
		if denied.Load() != 0 {
			b.Fatalf("fixture: %d calls denied; the limit must never be reached", denied.Load())
		}
	}
	s := redistest.Start(b)
	single := s.Client(func(o *redis.Options) { o.PoolSize = 64 })
	cl := redistest.StartCluster(b, 3, 0)
	cluster := cl.Client(func(o *redis.ClusterOptions) { o.PoolSize = 64 })
	for _, load := range []string{"light", "heavy"} {
		b.Run(load+"/single-node", func(b *testing.B) { run(b, single, load == "heavy") })
		b.Run(load+"/cluster-3-masters", func(b *testing.B) { run(b, cluster, load == "heavy") })
	}
}
