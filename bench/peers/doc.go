// Package peers benchmarks other Go rate limiters that keep their state in
// Redis (go-redis/redis_rate, ulule/limiter with its Redis store, throttled
// with its go-redis v9 store, rueidis/rueidislimiter) side by side with
// redislimit, the floors and the naive INCR+EXPIRE counter, on the same
// server in the same process. BenchmarkThroughput measures decisions/s by
// 1, 8 and 64 goroutines on 10,000 keys for redislimit (batching on and
// off, and on go-redis's AutoPipeliner), redis_rate, rueidislimiter, and
// redislimit's token-bucket script sent by rueidis; BenchmarkCeiling, the
// Redis-bound ceiling of the same script driven by redis-benchmark -P 64
// (skipped without redis-benchmark).
//
// rueidislimiter runs on a rueidis client of its own (rueidis's defaults,
// client-side caching off), not on go-redis, and its figures measure less
// than redislimit's (from its source, v1.0.76):
//
//   - It is a fixed window timed by the client's clock: each call sends
//     the client's time.Now and its end, now + window, in ms; a window
//     starts at the first call after the previous one ended (not on clock
//     boundaries), and clients whose clocks disagree disagree on when it
//     ends. Its keys expire (PXAT, 1 s after the end) by the server's
//     clock. redislimit's token bucket refills continuously by Redis's
//     TIME.
//   - It keeps two keys per id, "rueidislimiter:{id}" (the count) and
//     "rueidislimiter:{id}:ex" (the window's end), in one hash slot: its
//     key memory is the two together, and a call that starts a window
//     writes both (GET, SET, SET, INCRBY in the script; GET, INCRBY
//     otherwise).
//   - A denied call still increments the count (INCRBY runs whatever the
//     result; a call is allowed while the count is at most the limit), so
//     its saturated row writes to Redis on every call, where redislimit's
//     denied token-bucket call writes nothing new.
//
// Its round trips, like those of the rueidis-script subject, are the
// commands it sends: rueidis pipelines concurrent commands by itself.
//
// It is a module of its own so that the library's go.mod never requires the
// peers. Run it with
//
//	cd bench/peers && go test -run '^$' -bench .
package peers
