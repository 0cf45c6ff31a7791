package harness

import (
	"context"
	"strconv"
	"testing"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
)

// DenyCacheKeys is the bound of the deny cache in [HotDeniedKey]'s "on"
// benchmarks.
const DenyCacheKeys = 1000

// HotDeniedKey runs the hot-denied-key benchmarks: one token-bucket key
// ([Algorithm.Tight]), exhausted before timing by another limiter, then
// b.N calls on it by 1 and by 64 goroutines ("g1", "g64"), each denied,
// without a deny cache ("off") and with WithDenyCache(DenyCacheKeys)
// ("on"), on a client with go-redis's default options. The deny cache
// starts empty: the first denial it learns comes from Redis in the timed
// section. Besides what [Spread] reports, the fixture check: the key was
// exhausted (TightLimit calls allowed, the next denied) and is still
// denied, with a TTL, afterwards.
func HotDeniedKey(b *testing.B, t *Target) {
	tb := tokenBucket()
	sat := tb.Saturated()
	for _, mode := range []struct {
		name string
		opts []redislimit.Option
	}{
		{"off", nil},
		{"on", []redislimit.Option{redislimit.WithDenyCache(DenyCacheKeys)}},
	} {
		for _, g := range []int{1, 64} {
			b.Run(mode.name+"/g"+strconv.Itoa(g), func(b *testing.B) {
				key := t.Key(b.Name())
				// Exhaust the key with a limiter of its own, as another
				// process would.
				other := t.Client(b, nil, 0, nil)
				exhaust, err := sat.Bind(other)
				if err != nil {
					b.Fatal(err)
				}
				prepare(b, sat, exhaust, key)

				ctr := new(Counter)
				c := t.Client(b, ctr, 0, nil)
				d, err := decideOn(c, tb.Tight, mode.opts)
				if err != nil {
					b.Fatal(err)
				}
				warm(b, c, min(g, 10))
				Spread(b, t, ctr, g, []string{key}, d, false)
				verify(b, t, sat, key, int64(b.N))
			})
		}
	}
}

// ManyKeys is how many keys one AllowMany decides in [AllowMany].
const ManyKeys = 1000

// AllowMany runs "allow-many", one Limiter.AllowMany of ManyKeys keys per
// op, and "allow-sequential", ManyKeys Limiter.Allow calls one after
// another per op, on the same kind of keys, with the token bucket's Open
// configuration on a client with go-redis's default options: ns/op is
// per ManyKeys decisions, roundtrips/op per AllowMany. The fixture check:
// every result allowed, ManyKeys results per AllowMany, and afterwards a
// sample of the keys shows the calls made (as [Algorithm.Allowed]
// checks).
func AllowMany(b *testing.B, t *Target) {
	tb := tokenBucket()
	open := tb.Allowed()
	setup := func(b *testing.B) (*redislimit.Limiter, []string, *Counter) {
		ctr := new(Counter)
		c := t.Client(b, ctr, 0, nil)
		l, err := redislimit.New(c, tb.Open, redislimit.WithTimeout(benchTimeout))
		if err != nil {
			b.Fatal(err)
		}
		// Dial and load the script, untimed, on a key of its own.
		if _, err := l.Allow(context.Background(), t.Key(b.Name()+"/warm")); err != nil {
			b.Fatal(err)
		}
		return l, SpreadKeyNames(t, b.Name(), ManyKeys), ctr
	}
	check := func(b *testing.B, keys []string, calls int64) {
		b.Helper()
		for i := 0; i < len(keys); i += len(keys) / 10 {
			verify(b, t, open, keys[i], calls)
		}
	}
	b.Run("allow-many", func(b *testing.B) {
		ctx := context.Background()
		l, keys, ctr := setup(b)
		m := Measure(b, t, ctr)
		var calls int64
		for b.Loop() {
			res, err := l.AllowMany(ctx, keys)
			if err != nil {
				b.Fatal(err)
			}
			if len(res) != len(keys) {
				b.Fatalf("AllowMany of %d keys returned %d results", len(keys), len(res))
			}
			for i, r := range res {
				if !r.Allowed {
					b.Fatalf("AllowMany: key %d denied: %+v", i, r)
				}
			}
			calls++
		}
		m.Done()
		reportScripts(b, m, int64(b.N)*ManyKeys)
		check(b, keys, calls)
	})
	b.Run("allow-sequential", func(b *testing.B) {
		ctx := context.Background()
		l, keys, ctr := setup(b)
		m := Measure(b, t, ctr)
		var calls int64
		for b.Loop() {
			for i, k := range keys {
				r, err := l.Allow(ctx, k)
				if err != nil {
					b.Fatal(err)
				}
				if !r.Allowed {
					b.Fatalf("Allow: key %d denied: %+v", i, r)
				}
			}
			calls++
		}
		m.Done()
		reportScripts(b, m, int64(b.N)*ManyKeys)
		check(b, keys, calls)
	})
}

// reportScripts reports script-calls/decision, when measured, and fails
// b unless Redis ran a script for every one of the decisions made.
func reportScripts(b *testing.B, m *Meter, decisions int64) {
	b.Helper()
	n := m.ScriptCalls()
	if n < 0 {
		return
	}
	if n < decisions {
		b.Fatalf("%d decisions ran %d scripts in Redis, want at least one each", decisions, n)
	}
	b.ReportMetric(float64(n)/float64(decisions), "script-calls/decision")
}

// tokenBucket returns the token bucket's row of [Algorithms].
func tokenBucket() Algorithm { return fromRow(algtest.TokenBucket) }
