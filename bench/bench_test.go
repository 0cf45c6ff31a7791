package bench

import (
	"testing"

	"github.com/redislimit/redislimit/bench/internal/harness"
)

// target is the Redis every benchmark and demonstration in this package
// uses, opened once per process by TestMain.
var target *harness.Target

func TestMain(m *testing.M) { harness.Main(m, &target) }

// BenchmarkFloor measures the cheapest round trips: PING, and EVALSHA of a
// script that only returns 1 (the floor of any Lua decision).
func BenchmarkFloor(b *testing.B) {
	b.Logf("target: %s", target.Describe())
	harness.Floors(b, target)
}

// BenchmarkNaive measures hand-written INCR/EXPIRE fixed windows on a key
// whose limit is never reached.
func BenchmarkNaive(b *testing.B) {
	harness.Naives(b, target, harness.IncrExpire, harness.IncrExpireFirst, harness.MultiExpireNX)
}

// BenchmarkRedislimit measures Limiter.Allow for every algorithm, and for
// All of two and of three of them, on a key whose limit is never reached
// and on a saturated key.
func BenchmarkRedislimit(b *testing.B) { harness.Limiters(b, target) }

// BenchmarkAllVsParts measures the Redis time of All(TB,FW) and
// All(TB,FW,SL) against each of their parts alone, on allowed and on
// saturated keys, the subjects taking turns of 500 calls in one run:
// <short>-redis-usec/op per subject and all/dearer-part.
func BenchmarkAllVsParts(b *testing.B) { harness.AllVsParts(b, target) }

// BenchmarkDenyCache measures calls on one exhausted token-bucket key by
// 1 and 64 goroutines, without and with WithDenyCache: ns/op and the
// script calls Redis ran per decision (script-calls/op).
func BenchmarkDenyCache(b *testing.B) { harness.HotDeniedKey(b, target) }

// BenchmarkAllowMany measures one AllowMany of 1,000 keys against 1,000
// Allow calls in a row: ns/op per 1,000 decisions and round trips each.
func BenchmarkAllowMany(b *testing.B) { harness.AllowMany(b, target) }

// BenchmarkKeyMemory reports the Redis memory of one key after 100 and 1000
// allowed calls (B/key@100, B/key@1000).
func BenchmarkKeyMemory(b *testing.B) {
	b.Run("incr+expire", func(b *testing.B) { harness.KeyMemory(b, target, harness.IncrExpire.Subject()) })
	harness.LimiterMemory(b, target)
}

// BenchmarkChangedLimit measures the Redis time of a decision on a key
// whose limit changes at every call (two plans of one algorithm, derived
// with Limiter.Using) against one whose limit stays the same, in turns in
// one run: same-redis-usec/op, changed-redis-usec/op and changed/same.
func BenchmarkChangedLimit(b *testing.B) { harness.ChangedLimit(b, target) }

// BenchmarkCalendarVsFixedWindow measures the Redis time of a
// CalendarQuota decision against a FixedWindow one, taking turns of 500
// calls in one run, on allowed and saturated keys: fw-redis-usec/op,
// cal-redis-usec/op and cal/fw.
func BenchmarkCalendarVsFixedWindow(b *testing.B) { harness.CalendarVsFixedWindow(b, target) }
