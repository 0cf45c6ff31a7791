// Command demo shows redislimit's decisions: each algorithm with a limit of
// 5, and an All of a bucket of 3 and a window of 5, each called 7 times on
// one key, then the state they left in Redis.
//
// It runs on an embedded Redis (miniredis) unless REDIS_ADDR names a Redis
// to use, such as REDIS_ADDR=127.0.0.1:6379. On a real Redis it writes
// keys under the prefix "demo:" and deletes them at the end.
//
//	go run ./examples/demo
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
)

func main() {
	addr := os.Getenv("REDIS_ADDR")
	where := "Redis at " + addr
	if addr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			log.Fatal(err)
		}
		defer mr.Close()
		addr, where = mr.Addr(), "embedded miniredis (set REDIS_ADDR to use a real Redis)"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		log.Fatalf("cannot reach %s: %v", where, err)
	}
	fmt.Println("on", where)

	algorithms := []struct {
		name string
		alg  redislimit.Algorithm
	}{
		{"FixedWindow(5, 10s)", redislimit.FixedWindow(5, 10*time.Second)},
		{"SlidingLog(5, 10s)", redislimit.SlidingLog(5, 10*time.Second)},
		{"TokenBucket(1, 2s, 5)", redislimit.TokenBucket(1, 2*time.Second, 5)},
		{"SlidingWindow(5, 10s)", redislimit.SlidingWindow(5, 10*time.Second)},
		{"All(TokenBucket(1, 2s, 3), FixedWindow(5, 10s))", redislimit.All(redislimit.TokenBucket(1, 2*time.Second, 3), redislimit.FixedWindow(5, 10*time.Second))},
	}
	for _, a := range algorithms {
		lim, err := redislimit.New(rdb, a.alg, redislimit.WithPrefix("demo:"))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("\n%s on key \"alice\":\n", a.name)
		for i := 1; i <= 7; i++ {
			res, err := lim.Allow(ctx, "alice")
			if err != nil {
				log.Fatalf("Allow: %v", err) // Redis failed: an error, never a decision
			}
			verdict := "allowed"
			if !res.Allowed {
				verdict = "denied "
			}
			fmt.Printf("  call %d: %s remaining=%d retry_after=%-8v reset_after=%v\n",
				i, verdict, res.Remaining, res.RetryAfter.Round(time.Millisecond), res.ResetAfter.Round(time.Millisecond))
		}
		defer func() { _ = lim.Reset(ctx, "alice") }()
	}

	keys, err := rdb.Keys(ctx, "demo:*").Result()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("\nkeys in Redis, each with a TTL:")
	for _, k := range keys {
		ttl, _ := rdb.PTTL(ctx, k).Result()
		typ, _ := rdb.Type(ctx, k).Result()
		fmt.Printf("  %-22s %-5s ttl=%v\n", k, typ, ttl.Round(time.Millisecond))
	}
}
