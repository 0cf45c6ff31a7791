// Package bench measures what a redislimit decision costs, against the
// floors (PING, EVALSHA of `return 1`) and the naive INCR/EXPIRE code, and
// demonstrates, as tests, the failures of the usual alternatives.
//
//	go test -run '^$' -bench . ./bench   # benchmarks
//	go test ./bench                      # demonstrations only
//	go run ./bench/report                # both packages, 6 rounds, RESULTS.md
//
// The benchmarks start a redis-server on a free 127.0.0.1 port (or use
// REDIS_ADDR, loopback addresses only); without redis-server they fall back
// to an embedded miniredis and say loudly that the figures mean nothing,
// unless REDISLIMIT_REQUIRE_REDIS=1 makes that a failure. Each reports
// roundtrips/op, redis-usec/op (INFO commandstats) and redis-cpu-usec/op
// (INFO cpu) beside ns/op and allocs/op. BenchmarkRedislimit runs each
// algorithm alone and redislimit.All of two and of three of them, so that
// All's Redis time sits beside its parts' in one run. BenchmarkDenyCache measures a hot
// denied key with and without WithDenyCache (script-calls/op, from INFO
// commandstats), BenchmarkAllowMany one AllowMany of 1,000 keys against
// 1,000 Allow calls, BenchmarkChangedLimit the Redis time of a decision
// on a key whose limit changes at every call (Limiter.Using) against one
// whose limit stays the same. BenchmarkHotKey measures one key called by
// 64 goroutines with WithLeases and without (decisions/s,
// script-calls/decision); BenchmarkLeasesMultiProcess and
// TestLeasesMultiProcess run four processes of the test binary on one key
// and check what they admitted together against the limit. The peers, and the throughput benchmarks that compare
// with them and with the Redis-bound ceiling (redis-benchmark, when
// installed), are in the nested module bench/peers, so that the library's
// go.mod never requires them.
//
// Users run this package; nobody imports it.
package bench
