// Package peers benchmarks other Go rate limiters that keep their state in
// Redis (go-redis/redis_rate, ulule/limiter with its Redis store, throttled
// with its go-redis v9 store) side by side with redislimit, the floors and
// the naive INCR+EXPIRE counter, on the same server in the same process.
// BenchmarkThroughput measures decisions/s by 1, 8 and 64 goroutines on
// 10,000 keys for redislimit (batching on and off, and on go-redis's
// AutoPipeliner) and redis_rate; BenchmarkCeiling, the Redis-bound ceiling
// of the same script driven by redis-benchmark -P 64 (skipped without
// redis-benchmark).
//
// It is a module of its own so that the library's go.mod never requires the
// peers. Run it with
//
//	cd bench/peers && go test -run '^$' -bench .
package peers
