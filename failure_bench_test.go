package redislimit_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/redistest"
)

// BenchmarkAllowHealthy measures one decision on a healthy redis-server:
// the path every call takes while Redis is up, on a client with default
// options (the call runs on a worker, bounded by the timeout) and on one
// with ContextTimeoutEnabled (the call runs on the caller's goroutine).
func BenchmarkAllowHealthy(b *testing.B) {
	s := redistest.Start(b)
	for _, bc := range []struct {
		name string
		opt  func(*redis.Options)
	}{
		{"default-client", func(*redis.Options) {}},
		{"context-timeout-client", func(o *redis.Options) { o.ContextTimeoutEnabled = true }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := s.Client(bc.opt)
			lim, err := redislimit.New(c, redislimit.FixedWindow(1<<40, time.Hour), redislimit.WithPrefix(testPrefix(b)))
			if err != nil {
				b.Fatal(err)
			}
			benchAllow(b, lim)
		})
	}
}

// BenchmarkAllowLocal measures one decision of the in-process limiter.
func BenchmarkAllowLocal(b *testing.B) {
	lim, err := redislimit.NewLocal(redislimit.FixedWindow(1<<40, time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	benchAllow(b, lim)
}

// BenchmarkObserver measures what WithObserver adds to a decision of the
// in-process limiter, where it weighs the most: none, and an observer that
// does nothing.
func BenchmarkObserver(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts []redislimit.Option
	}{
		{"none", nil},
		{"no-op", []redislimit.Option{redislimit.WithObserver(func(context.Context, redislimit.Observation) {})}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			lim, err := redislimit.NewLocal(redislimit.FixedWindow(1<<40, time.Hour), tc.opts...)
			if err != nil {
				b.Fatal(err)
			}
			benchAllow(b, lim)
		})
	}
}

func benchAllow(b *testing.B, lim *redislimit.Limiter) {
	ctx := context.Background()
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
		if _, err := lim.Allow(ctx, keys[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := lim.Allow(ctx, keys[i%len(keys)])
		if err != nil || !r.Allowed || r.Degraded {
			b.Fatalf("Allow = %+v, %v", r, err)
		}
	}
}
