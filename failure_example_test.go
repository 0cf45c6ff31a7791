package redislimit_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
)

func ExampleWithFailurePolicy() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer rdb.Close()
	ctx := context.Background()

	// When Redis fails, fall back to a limit kept in this process's memory,
	// shared out among the 4 instances of the service: 25 per minute each.
	lim, _ := redislimit.New(rdb, redislimit.FixedWindow(100, time.Minute),
		redislimit.WithFailurePolicy(redislimit.FailLocal),
		redislimit.WithLocalInstances(4),
		redislimit.WithTimeout(100*time.Millisecond))

	res, err := lim.Allow(ctx, "tenant-1")
	fmt.Printf("Redis up:   allowed=%v degraded=%v limit=%d err=%v\n", res.Allowed, res.Degraded, res.Limit, err)

	mr.Close() // Redis goes away
	res, err = lim.Allow(ctx, "tenant-1")
	fmt.Printf("Redis down: allowed=%v degraded=%v limit=%d err=%v\n", res.Allowed, res.Degraded, res.Limit, err)
	// Output:
	// Redis up:   allowed=true degraded=false limit=100 err=<nil>
	// Redis down: allowed=true degraded=true limit=25 err=<nil>
}

func ExampleNewLocal() {
	ctx := context.Background()

	// No Redis: the same algorithms and Results, in this process's memory.
	lim, _ := redislimit.NewLocal(redislimit.TokenBucket(2, time.Second, 2))
	for i := 0; i < 3; i++ {
		res, _ := lim.Allow(ctx, "worker-9")
		fmt.Println(res.Allowed, res.Remaining)
	}
	// Output:
	// true 1
	// true 0
	// false 0
}

func ExampleWithOnError() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	// No go-redis retries: within a decision's timeout they rarely help.
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer func() { rdb.Close(); mr.Close() }()

	// Log every Redis error with log/slog, here without timestamps so the
	// output is stable.
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	lim, _ := redislimit.New(rdb, redislimit.SlidingLog(10, time.Minute),
		redislimit.WithFailurePolicy(redislimit.FailOpen),
		redislimit.WithOnError(func(ctx context.Context, err error) {
			logger.WarnContext(ctx, "rate limiter degraded", "err", err)
		}))

	mr.SetError("LOADING Redis is loading the dataset in memory")
	res, err := lim.Allow(context.Background(), "203.0.113.7")
	fmt.Println(res.Allowed, res.Degraded, err)
	// Output:
	// level=WARN msg="rate limiter degraded" err="redislimit: SlidingLog: LOADING Redis is loading the dataset in memory"
	// true true <nil>
}
