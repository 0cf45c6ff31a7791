// Package peers benchmarks other Go rate limiters that keep their state in
// Redis (go-redis/redis_rate, ulule/limiter with its Redis store, throttled
// with its go-redis v9 store) side by side with redislimit, the floors and
// the naive INCR+EXPIRE counter, on the same server in the same process.
//
// It is a module of its own so that the library's go.mod never requires the
// peers. Run it with
//
//	cd bench/peers && go test -run '^$' -bench .
package peers
