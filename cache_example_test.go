package redislimit_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
)

// cacheExampleRedis starts an embedded Redis and a client for an example;
// the caller closes both.
func cacheExampleRedis() (*miniredis.Miniredis, *redis.Client) {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	// No retries: the examples that stop Redis see the failure at once.
	return mr, redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialerRetries: 1})
}

func ExampleNewCache() {
	mr, rdb := cacheExampleRedis()
	defer mr.Close()
	defer rdb.Close()

	type Profile struct {
		Name  string
		Langs []string
	}
	profiles, err := redislimit.NewCache[Profile](rdb, redislimit.WithCachePrefix("profile:"))
	if err != nil {
		fmt.Println(err)
		return
	}

	ctx := context.Background()
	if err := profiles.Set(ctx, "user42", Profile{Name: "Zoë", Langs: []string{"go", "lua"}}, time.Hour); err != nil {
		fmt.Println("set:", err)
		return
	}
	p, found, err := profiles.Get(ctx, "user42")
	fmt.Printf("%+v %v %v\n", p, found, err)
	fmt.Println(mr.Keys())
	// Output:
	// {Name:Zoë Langs:[go lua]} true <nil>
	// [profile:{user42}]
}

func ExampleCache_Get() {
	mr, rdb := cacheExampleRedis()
	defer rdb.Close()
	sessions, err := redislimit.NewCache[string](rdb)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()

	lookup := func() {
		v, found, err := sessions.Get(ctx, "s1")
		switch {
		case err != nil:
			// Redis failed: this is not an empty cache.
			fmt.Println("error, found =", found)
		case !found:
			fmt.Println("miss")
		default:
			fmt.Println("hit:", v)
		}
	}

	lookup()
	_ = sessions.Set(ctx, "s1", "alice", 30*time.Minute)
	lookup()
	mr.Close() // Redis goes away
	lookup()
	// Output:
	// miss
	// hit: alice
	// error, found = false
}

func ExampleCache_GetOrLoad() {
	mr, rdb := cacheExampleRedis()
	defer mr.Close()
	defer rdb.Close()
	prices, err := redislimit.NewCache[int](rdb, redislimit.WithCacheJitter(0.1))
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()

	loadPrice := func(ctx context.Context) (int, error) {
		fmt.Println("querying the database")
		return 1999, nil
	}
	for range 3 {
		p, err := prices.GetOrLoad(ctx, "sku-1", 5*time.Minute, loadPrice)
		fmt.Println(p, err)
	}
	// Output:
	// querying the database
	// 1999 <nil>
	// 1999 <nil>
	// 1999 <nil>
}

func ExampleWithCacheLoadOnError() {
	mr, rdb := cacheExampleRedis()
	defer rdb.Close()
	mr.Close() // Redis is down from the start

	prices, err := redislimit.NewCache[int](rdb,
		// GetOrLoad serves from the loader when Redis fails...
		redislimit.WithCacheLoadOnError(),
		// ...and the error still reaches the log.
		redislimit.WithCacheOnError(func(ctx context.Context, err error) {
			var netErr net.Error
			fmt.Println("cache degraded; network error:", errors.As(err, &netErr))
		}))
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := prices.GetOrLoad(context.Background(), "sku-1", 5*time.Minute, func(context.Context) (int, error) {
		return 1999, nil
	})
	fmt.Println(p, err)
	// Output:
	// cache degraded; network error: true
	// 1999 <nil>
}

func ExampleWithCacheTimeout() {
	// A server that accepts connections and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	// Default options: go-redis would wait 3s for each read, and retry.
	rdb := redis.NewClient(&redis.Options{Addr: ln.Addr().String()})
	defer rdb.Close()

	sessions, err := redislimit.NewCache[string](rdb, redislimit.WithCacheTimeout(100*time.Millisecond))
	if err != nil {
		fmt.Println(err)
		return
	}
	// Get gives up after 100ms (or at ctx's deadline, if that comes first).
	_, found, err := sessions.Get(context.Background(), "s1")
	fmt.Println(found, errors.Is(err, redislimit.ErrTimeout))
	fmt.Println(err)

	_, err = redislimit.NewCache[string](rdb, redislimit.WithCacheTimeout(0))
	fmt.Println(errors.Is(err, redislimit.ErrInvalidConfig))
	// Output:
	// false true
	// redislimit: cache get: redis call timed out after 100ms
	// true
}
