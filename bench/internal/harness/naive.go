package harness

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// NaiveWindow is the window of the naive fixed-window counters.
const NaiveWindow = time.Hour

// NaiveLimit is the limit of the naive counters in benchmarks: never reached.
const NaiveLimit = 1 << 40

// Ping is the floor of any decision: one PING round trip.
func Ping() Subject {
	return Subject{
		Allowed: true,
		Bind: func(c *redis.Client) (Decide, error) {
			return func(ctx context.Context, _ string) (bool, error) {
				return true, c.Ping(ctx).Err()
			}, nil
		},
	}
}

// returnOne is the cheapest script: the floor of any Lua decision.
var returnOne = redis.NewScript("return 1")

// EvalFloor is the floor of a Lua decision: EVALSHA of a script that only
// returns 1, with the key in KEYS as a limiter passes it.
func EvalFloor() Subject {
	return Subject{
		Allowed: true,
		Bind: func(c *redis.Client) (Decide, error) {
			if err := returnOne.Load(context.Background(), c).Err(); err != nil {
				return nil, err
			}
			return func(ctx context.Context, key string) (bool, error) {
				n, err := returnOne.Run(ctx, c, []string{key}).Int64()
				return n == 1, err
			}, nil
		},
	}
}

// Naive is a hand-written fixed-window counter of the kind found in
// application code.
type Naive int

// The naive variants.
const (
	// IncrExpire sends INCR, then EXPIRE, on every call: two round trips.
	IncrExpire Naive = iota
	// IncrExpireFirst sends INCR, then EXPIRE only when the count is 1: one
	// round trip most of the time, and a key without a TTL forever when that
	// EXPIRE is lost.
	IncrExpireFirst
	// MultiExpireNX sends MULTI, INCR, EXPIRE … NX, EXEC in one round trip.
	MultiExpireNX
)

// String returns the variant's benchmark name.
func (v Naive) String() string {
	switch v {
	case IncrExpire:
		return "incr+expire"
	case IncrExpireFirst:
		return "incr+expire-if-1"
	case MultiExpireNX:
		return "multi-incr-expire-nx"
	}
	return fmt.Sprintf("Naive(%d)", int(v))
}

// Decide returns the variant's decision with limit per window on c: it
// returns the count after the increment too.
func (v Naive) Decide(c redis.Cmdable, limit int64, window time.Duration) func(ctx context.Context, key string) (int64, error) {
	expire := c.Expire // whole seconds
	if window%time.Second != 0 {
		expire = c.PExpire
	}
	switch v {
	case IncrExpire:
		return func(ctx context.Context, key string) (int64, error) {
			n, err := c.Incr(ctx, key).Result()
			if err != nil {
				return 0, err
			}
			return n, expire(ctx, key, window).Err()
		}
	case IncrExpireFirst:
		return func(ctx context.Context, key string) (int64, error) {
			n, err := c.Incr(ctx, key).Result()
			if err != nil {
				return 0, err
			}
			if n == 1 {
				err = expire(ctx, key, window).Err()
			}
			return n, err
		}
	default:
		return func(ctx context.Context, key string) (int64, error) {
			var incr *redis.IntCmd
			_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
				incr = p.Incr(ctx, key)
				p.ExpireNX(ctx, key, window)
				return nil
			})
			if err != nil {
				return 0, err
			}
			return incr.Val(), nil
		}
	}
}

// Subject returns the variant as a benchmark subject on an allowed key, with
// a fixture check that the counter equals the calls made and has a TTL
// within the window.
func (v Naive) Subject() Subject {
	return Subject{
		Allowed: true,
		Bind: func(c *redis.Client) (Decide, error) {
			d := v.Decide(c, NaiveLimit, NaiveWindow)
			return func(ctx context.Context, key string) (bool, error) {
				n, err := d(ctx, key)
				return n <= NaiveLimit, err
			}, nil
		},
		Verify: func(ctx context.Context, admin *redis.Client, key string, calls int64) error {
			if calls == 0 {
				return nil
			}
			n, err := admin.Get(ctx, key).Int64()
			if err != nil {
				return fmt.Errorf("GET: %w", err)
			}
			if n != calls {
				return fmt.Errorf("counter = %d, want %d", n, calls)
			}
			return CheckTTL(ctx, admin, key, NaiveWindow)
		},
	}
}

// CheckTTL returns an error unless key exists with a TTL in (0, max].
func CheckTTL(ctx context.Context, c redis.Cmdable, key string, max time.Duration) error {
	ttl, err := c.PTTL(ctx, key).Result()
	if err != nil {
		return fmt.Errorf("PTTL: %w", err)
	}
	if ttl <= 0 || ttl > max {
		return fmt.Errorf("PTTL of %q = %v, want in (0, %v]", key, ttl, max)
	}
	return nil
}
