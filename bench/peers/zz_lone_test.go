package peers

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/redislimit/redislimit"
)

func BenchmarkZLone(b *testing.B) {
	ctx := context.Background()
	def := redis.NewClient(&redis.Options{Addr: "127.0.0.1:7201"})
	ctxc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:7201", ContextTimeoutEnabled: true})
	for _, tc := range []struct {
		name string
		f    func(k string) error
	}{
		{"redislimit-default", func() func(string) error {
			l, _ := redislimit.New(def, redislimit.TokenBucket(1000000, time.Second, 1000000), redislimit.WithPrefix("a:"))
			return func(k string) error { _, err := l.Allow(ctx, k); return err }
		}()},
		{"redislimit-default-nobatch", func() func(string) error {
			l, _ := redislimit.New(def, redislimit.TokenBucket(1000000, time.Second, 1000000), redislimit.WithPrefix("a:"), redislimit.WithBatchSize(1))
			return func(k string) error { _, err := l.Allow(ctx, k); return err }
		}()},
		{"redislimit-ctxclient", func() func(string) error {
			l, _ := redislimit.New(ctxc, redislimit.TokenBucket(1000000, time.Second, 1000000), redislimit.WithPrefix("b:"))
			return func(k string) error { _, err := l.Allow(ctx, k); return err }
		}()},
		{"redis_rate", func() func(string) error {
			l := redis_rate.NewLimiter(def)
			lim := redis_rate.Limit{Rate: 1000000, Burst: 1000000, Period: time.Second}
			return func(k string) error { _, err := l.Allow(ctx, k, lim); return err }
		}()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := tc.f("k" + strconv.Itoa(i%10000)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
