package harness

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
)

// Algorithm is one of redislimit's algorithms as benchmarked: a
// configuration whose limit is never reached by a benchmark (Open) and one
// that a few calls exhaust (Tight).
type Algorithm struct {
	// Name is the benchmark name, e.g. "fixed-window".
	Name string
	// Short is the algorithm's name in its Redis keys, e.g. "fw".
	Short string
	// Open is never exhausted within an hour of benchmarking.
	Open redislimit.Algorithm
	// Tight admits TightLimit calls per hour.
	Tight redislimit.Algorithm
	// Exact reports whether Remaining after n calls on a fresh key of Open
	// is exactly Open's limit minus n (not so for a bucket that refills).
	Exact bool
}

// TightLimit is the capacity of [Algorithm.Tight].
const TightLimit = 10

// Algorithms returns redislimit's algorithms.
func Algorithms() []Algorithm {
	return []Algorithm{
		{
			Name: "fixed-window", Short: "fw", Exact: true,
			Open:  redislimit.FixedWindow(1<<40, time.Hour),
			Tight: redislimit.FixedWindow(TightLimit, time.Hour),
		},
		{
			Name: "sliding-log", Short: "sl", Exact: true,
			Open:  redislimit.SlidingLog(1<<20, time.Hour),
			Tight: redislimit.SlidingLog(TightLimit, time.Hour),
		},
		{
			Name: "token-bucket", Short: "tb",
			Open:  redislimit.TokenBucket(1000, time.Second, 1<<36),
			Tight: redislimit.TokenBucket(1, time.Hour, TightLimit),
		},
	}
}

// RedisKey returns the Redis key of user key k under the default prefix.
func (a Algorithm) RedisKey(k string) string {
	return redislimit.DefaultPrefix + a.Short + ":{" + k + "}"
}

// benchTimeout replaces the limiter's default per-decision timeout in
// benchmarks: on a loaded 2-CPU machine running 64 goroutines, a decision
// can wait for Redis longer than the default, and a benchmark stops at the
// first error. The timeout changes no step of the decision's path.
const benchTimeout = 10 * time.Second

func limiterDecide(c redis.Scripter, alg redislimit.Algorithm) (*redislimit.Limiter, Decide, error) {
	l, err := redislimit.New(c, alg, redislimit.WithTimeout(benchTimeout))
	if err != nil {
		return nil, nil, err
	}
	return l, func(ctx context.Context, key string) (bool, error) {
		r, err := l.Allow(ctx, key)
		return r.Allowed, err
	}, nil
}

// peek returns Peek of key by a limiter running alg on c.
func peek(ctx context.Context, c *redis.Client, alg redislimit.Algorithm, key string) (redislimit.Result, error) {
	l, err := redislimit.New(c, alg)
	if err != nil {
		return redislimit.Result{}, err
	}
	return l.Peek(ctx, key)
}

// Allowed returns the benchmark subject of a's Open configuration: every
// call allowed. Its fixture check peeks at the key: still allowed, Remaining
// as the calls made imply, and a TTL on the Redis key.
func (a Algorithm) Allowed() Subject {
	limit := a.Open.Limit()
	return Subject{
		Allowed: true,
		Bind: func(c *redis.Client) (Decide, error) {
			_, d, err := limiterDecide(c, a.Open)
			return d, err
		},
		Verify: func(ctx context.Context, admin *redis.Client, key string, calls int64) error {
			r, err := peek(ctx, admin, a.Open, key)
			if err != nil {
				return err
			}
			want := limit - int(calls)
			switch {
			case !r.Allowed:
				return fmt.Errorf("Peek after %d calls = %+v, want allowed", calls, r)
			case a.Exact && r.Remaining != want:
				return fmt.Errorf("Peek after %d calls: Remaining = %d, want %d", calls, r.Remaining, want)
			case r.Remaining < want || r.Remaining > limit:
				return fmt.Errorf("Peek after %d calls: Remaining = %d, want %d to %d", calls, r.Remaining, want, limit)
			}
			// A refilling bucket's key expires as it becomes full, maybe
			// between Peek and PTTL; a window's key must still exist. No
			// key may lack a TTL.
			ttl, err := admin.PTTL(ctx, a.RedisKey(key)).Result()
			switch {
			case err != nil:
				return fmt.Errorf("PTTL: %w", err)
			case ttl == -2 && (calls == 0 || !a.Exact):
				return nil
			case ttl < 0:
				return fmt.Errorf("PTTL after %d calls = %d, Remaining %d: want a key with a TTL", calls, ttl, r.Remaining)
			}
			return nil
		},
	}
}

// Saturated returns the benchmark subject of a's Tight configuration on a
// key exhausted before timing: every timed call denied. Its fixture check
// peeks at the key: denied, nothing remaining, and a TTL on the Redis key.
func (a Algorithm) Saturated() Subject {
	return Subject{
		Allowed: false,
		Bind: func(c *redis.Client) (Decide, error) {
			_, d, err := limiterDecide(c, a.Tight)
			return d, err
		},
		Prepare: func(ctx context.Context, d Decide, key string) error {
			for i := range TightLimit + 1 {
				ok, err := d(ctx, key)
				if err != nil {
					return err
				}
				if want := i < TightLimit; ok != want {
					return fmt.Errorf("saturating: call %d allowed = %v, want %v", i+1, ok, want)
				}
			}
			return nil
		},
		Verify: func(ctx context.Context, admin *redis.Client, key string, calls int64) error {
			r, err := peek(ctx, admin, a.Tight, key)
			if err != nil {
				return err
			}
			if r.Allowed || r.Remaining != 0 || r.RetryAfter <= 0 {
				return fmt.Errorf("Peek of saturated key = %+v, want denied with nothing remaining", r)
			}
			return CheckTTL(ctx, admin, a.RedisKey(key), redislimit.MaxWindow)
		},
	}
}
