package redislimit_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
)

func ExampleNewConcurrency() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	// Two reports per tenant at once; a lease lasts 30s unless extended.
	now := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	cc, err := redislimit.NewConcurrency(rdb, 2, 30*time.Second,
		redislimit.WithClock(func() time.Time { return now }))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	a, res, _ := cc.Acquire(ctx, "tenant-1")
	fmt.Println(res.Allowed, res.Remaining)
	_, res, _ = cc.Acquire(ctx, "tenant-1")
	fmt.Println(res.Allowed, res.Remaining)
	now = now.Add(10 * time.Second)
	lease, res, _ := cc.Acquire(ctx, "tenant-1")
	fmt.Println(res.Allowed, lease == nil, res.RetryAfter)
	_ = a.Release(ctx)
	_, res, _ = cc.Acquire(ctx, "tenant-1")
	fmt.Println(res.Allowed, res.Remaining)
	// Output:
	// true 1
	// true 0
	// false true 20s
	// true 0
}
