package redislimit_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/redistest"
)

// BenchmarkAllowHealthy measures one decision on a healthy redis-server
// with a default client: the path every call takes while Redis is up.
func BenchmarkAllowHealthy(b *testing.B) {
	s := redistest.Start(b)
	c := s.Client()
	lim, err := redislimit.New(c, redislimit.FixedWindow(1<<40, time.Hour), redislimit.WithPrefix(testPrefix(b)))
	if err != nil {
		b.Fatal(err)
	}
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
		if err != nil || !r.Allowed {
			b.Fatalf("Allow = %+v, %v", r, err)
		}
	}
}
