package peers

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/throttled/throttled/v2"
	"github.com/throttled/throttled/v2/store/goredisstore.v9"
	"github.com/ulule/limiter/v3"
	ulredis "github.com/ulule/limiter/v3/drivers/store/redis"

	"github.com/redislimit/redislimit/bench/internal/harness"
)

var target *harness.Target

func TestMain(m *testing.M) { harness.Main(m, &target) }

// tight is the capacity of every peer's saturated configuration.
const tight = harness.TightLimit

// peer is one library under test, configured open (never exhausted) or
// tight (tight calls per hour).
type peer struct {
	name string
	// bind returns a decision on c, open or tight.
	bind func(c *redis.Client, open bool) (harness.Decide, error)
	// dial, for a library on a client of its own, takes the place of
	// bind, as harness.Subject's Dial does.
	dial func(tb testing.TB, addr string, ctr *harness.Counter, open bool) (harness.Decide, error)
	// redisKey returns the Redis key of user key k.
	redisKey func(k string) string
}

var peers = []peer{
	{
		name: "redis_rate",
		bind: func(c *redis.Client, open bool) (harness.Decide, error) {
			lim := redis_rate.Limit{Rate: 1_000_000, Burst: 1_000_000, Period: time.Second}
			if !open {
				lim = redis_rate.Limit{Rate: 1, Burst: tight, Period: time.Hour}
			}
			l := redis_rate.NewLimiter(c)
			return func(ctx context.Context, key string) (bool, error) {
				r, err := l.Allow(ctx, key, lim)
				if err != nil {
					return false, err
				}
				return r.Allowed > 0, nil
			}, nil
		},
		redisKey: func(k string) string { return "rate:" + k },
	},
	{
		name: "ulule",
		bind: func(c *redis.Client, open bool) (harness.Decide, error) {
			rate := limiter.Rate{Period: time.Hour, Limit: 1 << 40}
			if !open {
				rate.Limit = tight
			}
			store, err := ulredis.NewStoreWithOptions(c, limiter.StoreOptions{Prefix: "limiter"})
			if err != nil {
				return nil, err
			}
			l := limiter.New(store, rate)
			return func(ctx context.Context, key string) (bool, error) {
				r, err := l.Get(ctx, key)
				return !r.Reached, err
			}, nil
		},
		redisKey: func(k string) string { return "limiter:" + k },
	},
	{
		name: "throttled",
		bind: func(c *redis.Client, open bool) (harness.Decide, error) {
			q := throttled.RateQuota{MaxRate: throttled.PerSec(1000), MaxBurst: 1 << 30}
			if !open {
				q = throttled.RateQuota{MaxRate: throttled.PerHour(1), MaxBurst: tight - 1}
			}
			store, err := goredisstore.NewCtx(c, "throttled:")
			if err != nil {
				return nil, err
			}
			l, err := throttled.NewGCRARateLimiterCtx(store, q)
			if err != nil {
				return nil, err
			}
			return func(ctx context.Context, key string) (bool, error) {
				limited, _, err := l.RateLimitCtx(ctx, key, 1)
				return !limited, err
			}, nil
		},
		redisKey: func(k string) string { return "throttled:" + k },
	},
	{
		name: "rueidislimiter",
		dial: func(tb testing.TB, addr string, ctr *harness.Counter, open bool) (harness.Decide, error) {
			if open {
				return rueidisLimiter(tb, addr, ctr, openRueidisLimit, time.Hour)
			}
			return rueidisLimiter(tb, addr, ctr, tight, time.Hour)
		},
		// The counter; the window's end is at redisKey(k)+":ex".
		redisKey: func(k string) string { return "rueidislimiter:{" + k + "}" },
	},
}

// subject returns the harness.Subject that binds p, open or tight, with
// the Decide it binds also stored in *d when d is not nil.
func (p peer) subject(open bool, d *harness.Decide) harness.Subject {
	keep := func(dec harness.Decide, err error) (harness.Decide, error) {
		if d != nil {
			*d = dec
		}
		return dec, err
	}
	if p.dial != nil {
		return harness.Subject{Dial: func(tb testing.TB, addr string, ctr *harness.Counter) (harness.Decide, error) {
			return keep(p.dial(tb, addr, ctr, open))
		}}
	}
	return harness.Subject{Bind: func(c *redis.Client) (harness.Decide, error) { return keep(p.bind(c, open)) }}
}

// allowed is p's open configuration: every call allowed, and afterwards the
// key has a TTL (or has expired, back at full capacity).
func (p peer) allowed() harness.Subject {
	s := p.subject(true, nil)
	s.Allowed = true
	s.Verify = func(ctx context.Context, admin *redis.Client, key string, calls int64) error {
		ttl, err := admin.PTTL(ctx, p.redisKey(key)).Result()
		if err != nil {
			return err
		}
		if ttl == -1 {
			return fmt.Errorf("%s: key without a TTL after %d calls", p.name, calls)
		}
		return nil
	}
	return s
}

// saturated is p's tight configuration on a key exhausted before timing:
// every timed call denied, and afterwards the key exists with a TTL and a
// further call is still denied.
func (p peer) saturated() harness.Subject {
	var d harness.Decide
	s := p.subject(false, &d)
	s.Allowed = false
	s.Prepare = func(ctx context.Context, d harness.Decide, key string) error {
		for i := range tight + 1 {
			ok, err := d(ctx, key)
			if err != nil {
				return err
			}
			if want := i < tight; ok != want {
				return fmt.Errorf("%s: saturating: call %d allowed = %v, want %v", p.name, i+1, ok, want)
			}
		}
		return nil
	}
	s.Verify = func(ctx context.Context, admin *redis.Client, key string, calls int64) error {
		if err := harness.CheckTTL(ctx, admin, p.redisKey(key), 24*time.Hour); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		if ok, err := d(ctx, key); err != nil || ok {
			return fmt.Errorf("%s: call on saturated key: allowed %v, error %v; want denied", p.name, ok, err)
		}
		return nil
	}
	return s
}

// BenchmarkFloor measures PING and EVALSHA of `return 1` in this process,
// so that every ratio in it has its own baseline.
func BenchmarkFloor(b *testing.B) {
	b.Logf("target: %s", target.Describe())
	harness.Floors(b, target)
}

// BenchmarkNaive measures INCR then EXPIRE on every call.
func BenchmarkNaive(b *testing.B) { harness.Naives(b, target, harness.IncrExpire) }

// BenchmarkRedislimit measures redislimit's algorithms in this process.
func BenchmarkRedislimit(b *testing.B) { harness.Limiters(b, target) }

// BenchmarkPeer measures each peer on an allowed and on a saturated key.
func BenchmarkPeer(b *testing.B) {
	for _, p := range peers {
		b.Run(p.name+"/allowed", func(b *testing.B) { harness.Run(b, target, p.allowed()) })
		b.Run(p.name+"/saturated", func(b *testing.B) { harness.Run(b, target, p.saturated()) })
	}
}

// BenchmarkKeyMemory reports each peer's Redis memory per key after 100 and
// 1000 allowed calls.
func BenchmarkKeyMemory(b *testing.B) {
	for _, p := range peers {
		b.Run(p.name, func(b *testing.B) { harness.KeyMemory(b, target, p.allowed()) })
	}
}
