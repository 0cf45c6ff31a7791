package redislimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/redistest"
)

// cacheBenchItem is a small record, the kind of value a page caches.
type cacheBenchItem struct {
	ID    int
	Name  string
	Tags  []string
	Added time.Time
}

var cacheBenchValue = cacheBenchItem{ID: 42, Name: "name", Tags: []string{"a", "b"}, Added: time.Unix(1700000000, 0).UTC()}

// BenchmarkCacheGet measures a hit against a real redis-server, for a string
// (stored as is) and a struct (stored as JSON).
func BenchmarkCacheGet(b *testing.B) {
	s := redistest.Start(b)
	b.Run("string", func(b *testing.B) {
		cacheBenchGet(b, s, "value-0123456789")
	})
	b.Run("struct", func(b *testing.B) {
		cacheBenchGet(b, s, cacheBenchValue)
	})
}

// BenchmarkCacheSet measures a write against a real redis-server.
func BenchmarkCacheSet(b *testing.B) {
	s := redistest.Start(b)
	b.Run("string", func(b *testing.B) {
		cacheBenchSet(b, s, "value-0123456789")
	})
	b.Run("struct", func(b *testing.B) {
		cacheBenchSet(b, s, cacheBenchValue)
	})
}

// cacheBenchClient returns a cache on s whose client is connected and
// counts round trips.
func cacheBenchClient[T any](b *testing.B, s *redistest.Server) (*redislimit.Cache[T], *cacheCmdCounter) {
	rc := s.Client()
	cacheWarm(b, rc)
	rt := &cacheCmdCounter{}
	rc.AddHook(rt)
	return redislimit.NewCache[T](rc), rt
}

func cacheBenchGet[T any](b *testing.B, s *redistest.Server, v T) {
	c, rt := cacheBenchClient[T](b, s)
	ctx := context.Background()
	if err := c.Set(ctx, "bench", v, time.Hour); err != nil {
		b.Fatalf("Set: %v", err)
	}
	rt.n.Store(0)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		// A miss would measure the wrong path: check every reply.
		if _, found, err := c.Get(ctx, "bench"); err != nil || !found {
			b.Fatalf("Get = (_, %v, %v), want a hit", found, err)
		}
	}
	b.ReportMetric(float64(rt.n.Load())/float64(b.N), "roundtrips/op")
}

func cacheBenchSet[T any](b *testing.B, s *redistest.Server, v T) {
	c, rt := cacheBenchClient[T](b, s)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := c.Set(ctx, "bench", v, time.Hour); err != nil {
			b.Fatalf("Set: %v", err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(rt.n.Load())/float64(b.N), "roundtrips/op")
	if _, found, err := c.Get(ctx, "bench"); err != nil || !found {
		b.Fatalf("Get after the benchmark = (_, %v, %v), want a hit", found, err)
	}
}
