package harness

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// Floors runs the floor benchmarks: "ping" and "evalsha-return-1".
func Floors(b *testing.B, t *Target) {
	b.Run("ping", func(b *testing.B) { Run(b, t, Ping()) })
	b.Run("evalsha-return-1", func(b *testing.B) { Run(b, t, EvalFloor()) })
}

// Naives runs the benchmarks of the given naive variants.
func Naives(b *testing.B, t *Target, variants ...Naive) {
	for _, v := range variants {
		b.Run(v.String(), func(b *testing.B) { Run(b, t, v.Subject()) })
	}
}

// Limiters runs the benchmarks of redislimit's algorithms, each on an
// allowed key and on a saturated key.
func Limiters(b *testing.B, t *Target) {
	for _, a := range Algorithms() {
		b.Run(a.Name+"/allowed", func(b *testing.B) { Run(b, t, a.Allowed()) })
		b.Run(a.Name+"/saturated", func(b *testing.B) { Run(b, t, a.Saturated()) })
	}
	// The same decision on a client that bounds socket reads by context
	// deadlines, which the limiter calls inline instead of on a worker
	// goroutine: the difference is what the timeout machinery costs.
	fw := Algorithms()[0]
	inline := fw.Allowed()
	inline.Options = func(o *redis.Options) { o.ContextTimeoutEnabled = true }
	b.Run(fw.Name+"/allowed-ctx-timeout-client", func(b *testing.B) { Run(b, t, inline) })
}

// LimiterMemory runs [KeyMemory] for each of redislimit's algorithms.
func LimiterMemory(b *testing.B, t *Target) {
	for _, a := range Algorithms() {
		b.Run(a.Name, func(b *testing.B) { KeyMemory(b, t, a.Allowed()) })
	}
}
