package redislimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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

// cacheBenchClients are the client kinds whose calls take different
// paths: default options (the call runs on another goroutine, which the
// caller stops waiting for at the timeout) and ContextTimeoutEnabled (the
// call runs on the caller's goroutine under a context deadline).
var cacheBenchClients = []struct {
	name string
	opts []func(*redis.Options)
}{
	{"default-client", nil},
	{"context-timeout-client", []func(*redis.Options){func(o *redis.Options) { o.ContextTimeoutEnabled = true }}},
}

// BenchmarkCacheGet measures a hit against a real redis-server, for a string
// (stored as is) and a struct (stored as JSON), on each kind of client;
// "floor" is go-redis's GET alone, without the cache.
func BenchmarkCacheGet(b *testing.B) {
	s := redistest.Start(b)
	for _, ck := range cacheBenchClients {
		b.Run(ck.name+"/floor", func(b *testing.B) {
			cacheBenchFloor(b, s, ck.opts)
		})
		b.Run(ck.name+"/string", func(b *testing.B) {
			cacheBenchGet(b, s, ck.opts, "value-0123456789")
		})
		b.Run(ck.name+"/struct", func(b *testing.B) {
			cacheBenchGet(b, s, ck.opts, cacheBenchValue)
		})
	}
}

// BenchmarkCacheGetParallel measures hits from many goroutines at once,
// where each call's wait on the default client costs a goroutine.
func BenchmarkCacheGetParallel(b *testing.B) {
	s := redistest.Start(b)
	for _, ck := range cacheBenchClients {
		b.Run(ck.name, func(b *testing.B) {
			c, rt := cacheBenchClient[string](b, s, ck.opts)
			ctx := context.Background()
			if err := c.Set(ctx, "bench", "value-0123456789", time.Hour); err != nil {
				b.Fatalf("Set: %v", err)
			}
			rt.n.Store(0)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, found, err := c.Get(ctx, "bench"); err != nil || !found {
						b.Errorf("Get = (_, %v, %v), want a hit", found, err)
						return
					}
				}
			})
			b.ReportMetric(float64(rt.n.Load())/float64(b.N), "roundtrips/op")
		})
	}
}

// BenchmarkCacheSet measures a write against a real redis-server.
func BenchmarkCacheSet(b *testing.B) {
	s := redistest.Start(b)
	for _, ck := range cacheBenchClients {
		b.Run(ck.name+"/string", func(b *testing.B) {
			cacheBenchSet(b, s, ck.opts, "value-0123456789")
		})
		b.Run(ck.name+"/struct", func(b *testing.B) {
			cacheBenchSet(b, s, ck.opts, cacheBenchValue)
		})
	}
}

// cacheBenchClient returns a cache on s whose client, built with opts, is
// connected and counts round trips.
func cacheBenchClient[T any](b *testing.B, s *redistest.Server, opts []func(*redis.Options)) (*redislimit.Cache[T], *cacheCmdCounter) {
	rc := s.Client(opts...)
	cacheWarm(b, rc)
	rt := &cacheCmdCounter{}
	rc.AddHook(rt)
	return newCache[T](b, rc), rt
}

// cacheBenchFloor measures go-redis's GET of a stored string, without the
// cache: what a cache hit cannot go below.
func cacheBenchFloor(b *testing.B, s *redistest.Server, opts []func(*redis.Options)) {
	rc := s.Client(opts...)
	cacheWarm(b, rc)
	ctx := context.Background()
	if err := rc.Set(ctx, "rc:{bench}", "value-0123456789", time.Hour).Err(); err != nil {
		b.Fatalf("SET: %v", err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := rc.Get(ctx, "rc:{bench}").Err(); err != nil {
			b.Fatalf("GET: %v", err)
		}
	}
}

func cacheBenchGet[T any](b *testing.B, s *redistest.Server, opts []func(*redis.Options), v T) {
	c, rt := cacheBenchClient[T](b, s, opts)
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

func cacheBenchSet[T any](b *testing.B, s *redistest.Server, opts []func(*redis.Options), v T) {
	c, rt := cacheBenchClient[T](b, s, opts)
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
