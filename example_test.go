package redislimit_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
)

// newRedis starts an embedded Redis for the examples; in production, pass
// your own *redis.Client, *redis.ClusterClient or other redis.Scripter.
func newRedis() (*redis.Client, func()) {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return rdb, func() { rdb.Close(); mr.Close() }
}

func Example() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	// At most 3 requests per client IP in any minute, across every server
	// that shares this Redis.
	lim, err := redislimit.New(rdb, redislimit.SlidingLog(3, time.Minute))
	if err != nil {
		panic(err)
	}
	for i := 0; i < 4; i++ {
		res, err := lim.Allow(ctx, "203.0.113.7")
		if err != nil {
			fmt.Println("Redis failed:", err) // not a decision: apply your failure policy
			continue
		}
		fmt.Printf("allowed=%v remaining=%d retry later=%v\n", res.Allowed, res.Remaining, res.RetryAfter > 0)
	}
	// Output:
	// allowed=true remaining=2 retry later=false
	// allowed=true remaining=1 retry later=false
	// allowed=true remaining=0 retry later=false
	// allowed=false remaining=0 retry later=true
}

func ExampleLimiter_AllowN() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	// 10 tokens per second, bursts of up to 20. A batch of 15 costs 15.
	lim, _ := redislimit.New(rdb, redislimit.TokenBucket(10, time.Second, 20))
	res, _ := lim.AllowN(ctx, "tenant-42", 15)
	fmt.Println(res.Allowed, res.Remaining)
	res, _ = lim.AllowN(ctx, "tenant-42", 15) // all or nothing: denied, nothing taken
	fmt.Println(res.Allowed, res.Remaining)
	_, err := lim.AllowN(ctx, "tenant-42", 25) // can never fit in the bucket
	fmt.Println(err)
	// Output:
	// true 5
	// false 5
	// redislimit: TokenBucket: cost exceeds the limit: a cost of 25 against a limit of 20
}

func ExampleLimiter_Peek() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	lim, _ := redislimit.New(rdb, redislimit.FixedWindow(100, time.Hour))
	_, _ = lim.AllowN(ctx, "api-key-1", 40)
	res, _ := lim.Peek(ctx, "api-key-1") // reports without consuming
	fmt.Printf("%d of %d left\n", res.Remaining, res.Limit)
	// Output: 60 of 100 left
}

func ExampleLimiter_Reset() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	lim, _ := redislimit.New(rdb, redislimit.FixedWindow(1, time.Hour))
	_, _ = lim.Allow(ctx, "user-7")
	res, _ := lim.Allow(ctx, "user-7")
	fmt.Println("before reset:", res.Allowed)
	_ = lim.Reset(ctx, "user-7")
	res, _ = lim.Allow(ctx, "user-7")
	fmt.Println("after reset:", res.Allowed)
	// Output:
	// before reset: false
	// after reset: true
}

func ExampleWithClock() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	// The client's clock instead of Redis TIME; here a fixed one.
	now := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	lim, _ := redislimit.New(rdb, redislimit.FixedWindow(1, 30*time.Second),
		redislimit.WithClock(func() time.Time { return now }))
	_, _ = lim.Allow(ctx, "k")
	res, _ := lim.Allow(ctx, "k")
	fmt.Println(res.Allowed, res.RetryAfter)
	// Output: false 30s
}

// dailyQuota is an Algorithm defined outside the package: at most limit
// units per UTC calendar day. Its decision is a Lua body, from which the
// Limiter assembles its script, alone or as a part of All. The Limiter
// gives it validation, key layout, the time source, reply checking and
// every other feature.
type dailyQuota struct{ limit int }

// dailyQuotaBody decides in decide, which writes nothing, and returns
// write, which the script calls to write (consume is true when the call
// is allowed, and in All when every part allowed it; and for Debit, past
// the limit, and Refund, with n negative), with the values write needs.
const dailyQuotaBody = `
local function write(consume, key, now, n, allowed, limit, dayEnd, used)
  local left = dayEnd - now
  if consume then
    used = math.max(used + n, 0)
    redis.call('SET', key, string.format('%d %d', dayEnd, used),
      'PX', string.format('%d', math.ceil(left / 1000) + ttl_margin))
  end
  local retry, reset = 0, 0
  if not allowed then retry = left end
  if used > 0 then reset = left end
  return math.max(limit - used, 0), retry, reset
end

local function decide(key, now, n, limit)
  limit = limit + 0
  local day = 86400000000
  local dayEnd = (math.floor(now / day) + 1) * day
  local used = 0
  local v = redis.call('GET', key)
  if v then
    local e, u = string.match(v, '^(%d+) (%d+)$')
    if tonumber(e) == dayEnd then used = tonumber(u) end
  end
  local allowed = used + n <= limit
  return allowed, write, allowed, limit, dayEnd, used
end
`

func (dailyQuota) Name() string          { return "daily" }
func (q dailyQuota) Limit() int          { return q.limit }
func (dailyQuota) Window() time.Duration { return 24 * time.Hour } // for Limiter.Quotas
func (dailyQuota) Body() string          { return dailyQuotaBody }
func (q dailyQuota) Args() ([]any, error) {
	if q.limit < 1 {
		return nil, fmt.Errorf("%w: daily quota must be at least 1", redislimit.ErrInvalidConfig)
	}
	return []any{q.limit}, nil
}

func Example_customAlgorithm() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	now := time.Date(2026, 5, 1, 18, 0, 0, 0, time.UTC)
	lim, err := redislimit.New(rdb, dailyQuota{limit: 1000}, redislimit.WithClock(func() time.Time { return now }))
	if err != nil {
		panic(err)
	}
	res, _ := lim.AllowN(ctx, "customer-9", 990)
	fmt.Println(res.Allowed, res.Remaining, res.ResetAfter)
	res, _ = lim.AllowN(ctx, "customer-9", 20)
	fmt.Println(res.Allowed, res.Remaining, res.RetryAfter)

	fmt.Println(lim.Quotas())

	// The same body is a part of All, next to the package's own
	// algorithms: 5 a second and 8 a day, in one script.
	both, err := redislimit.New(rdb, redislimit.All(
		redislimit.TokenBucket(5, time.Second, 5),
		dailyQuota{limit: 8},
	), redislimit.WithClock(func() time.Time { return now }))
	if err != nil {
		panic(err)
	}
	res, _ = both.AllowN(ctx, "customer-7", 5)
	fmt.Println(res.Allowed, res.Parts[0].Remaining, res.Parts[1].Remaining)
	now = now.Add(time.Second)
	res, _ = both.AllowN(ctx, "customer-7", 4)
	fmt.Println(res.Allowed, res.Parts[0].Remaining, res.Parts[1].Remaining, res.RetryAfter)

	_, err = redislimit.New(rdb, dailyQuota{limit: 0})
	fmt.Println(err)
	// Output:
	// true 10 6h0m0s
	// false 10 6h0m0s
	// [{1000 24h0m0s}]
	// true 0 3
	// false 5 3 5h59m59s
	// redislimit: invalid configuration: daily quota must be at least 1
}

func ExampleLimiter_AllowMany() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	// One request may touch several rate-limited resources: decide them
	// all in one round trip.
	lim, _ := redislimit.New(rdb, redislimit.FixedWindow(2, time.Minute))
	res, err := lim.AllowMany(ctx, []string{"user:7", "org:3", "user:7", "user:7"})
	if err != nil {
		panic(err)
	}
	for _, r := range res {
		fmt.Println(r.Allowed, r.Remaining)
	}
	// Output:
	// true 1
	// true 1
	// true 0
	// false 0
}

func ExampleWithDenyCache() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	// A client that keeps calling after it is denied is answered from
	// process memory until its limit lets it through again.
	lim, _ := redislimit.New(rdb, redislimit.FixedWindow(1, time.Hour), redislimit.WithDenyCache(10_000))
	for i := 0; i < 3; i++ {
		res, _ := lim.Allow(ctx, "203.0.113.7")
		fmt.Println(res.Allowed, res.RetryAfter > 59*time.Minute)
	}
	// Output:
	// true false
	// false true
	// false true
}

func ExampleLimiter_Wait() {
	rdb, done := newRedis()
	defer done()

	// A worker fleet shares one quota of a third-party API: each worker
	// waits for its turn instead of failing.
	lim, _ := redislimit.New(rdb, redislimit.FixedWindow(2, time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 3; i++ {
		err := lim.Wait(ctx, "partner-api")
		fmt.Println(err == nil, errors.Is(err, context.DeadlineExceeded))
	}
	// Output:
	// true false
	// true false
	// false true
}

func ExampleAll() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	// 2 a second, and 3 an hour: both hold, atomically.
	now := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	lim, err := redislimit.New(rdb, redislimit.All(
		redislimit.FixedWindow(2, time.Second),
		redislimit.FixedWindow(3, time.Hour),
	), redislimit.WithClock(func() time.Time { return now }))
	if err != nil {
		panic(err)
	}
	for i := 0; i < 3; i++ {
		res, _ := lim.Allow(ctx, "customer-7")
		fmt.Println(res.Allowed, res.Remaining, res.RetryAfter)
	}
	// The per-second limit denied the third call, which the hourly one
	// would have admitted: it was not charged.
	now = now.Add(time.Second)
	res, _ := lim.Allow(ctx, "customer-7")
	fmt.Println(res.Allowed, res.Parts[0].Remaining, res.Parts[1].Remaining)
	res, _ = lim.Allow(ctx, "customer-7")
	fmt.Println(res.Allowed, res.Parts[0].Allowed, res.Parts[1].Allowed, res.RetryAfter)
	// Output:
	// true 1 0s
	// true 0 0s
	// false 0 1s
	// true 1 0
	// false true false 59m59s
}

func ExampleSlidingWindow() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	// 10 a minute, the previous minute weighted by how much of it the
	// sliding minute still covers.
	now := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	lim, err := redislimit.New(rdb, redislimit.SlidingWindow(10, time.Minute),
		redislimit.WithClock(func() time.Time { return now }))
	if err != nil {
		panic(err)
	}
	res, _ := lim.AllowN(ctx, "client-3", 10)
	fmt.Println(res.Allowed, res.Remaining)

	// A minute and a half later, half of the previous minute's 10 still
	// counts: 5 units are free.
	now = now.Add(90 * time.Second)
	res, _ = lim.Peek(ctx, "client-3")
	fmt.Println(res.Allowed, res.Remaining)
	res, _ = lim.AllowN(ctx, "client-3", 6)
	fmt.Println(res.Allowed, res.RetryAfter)
	// Output:
	// true 0
	// true 5
	// false 6s
}

// An LLM call is charged by its tokens, known only after it ran: reserve
// an estimate with AllowN, then Debit the overrun or Refund the rest.
func ExampleLimiter_Debit() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	// 10,000 tokens per tenant per minute.
	lim, _ := redislimit.New(rdb, redislimit.FixedWindow(10000, time.Minute))
	const estimate = 2000
	res, _ := lim.AllowN(ctx, "tenant-42", estimate)
	if !res.Allowed {
		return // retry after res.RetryAfter
	}
	used := 9500 // the tokens the model reports
	if used > estimate {
		res, _ = lim.Debit(ctx, "tenant-42", used-estimate) // even past the limit
	} else if used < estimate {
		res, _ = lim.Refund(ctx, "tenant-42", estimate-used)
	}
	fmt.Println(res.Allowed, res.Remaining)

	// A call that ran over the limit leaves a debt: the tenant is denied
	// until the window ends.
	res, _ = lim.Debit(ctx, "tenant-42", 3000)
	fmt.Println(res.Allowed, res.Remaining, res.RetryAfter > 0)
	// Output:
	// true 500
	// false 0 true
}

// Refund gives back what a reservation did not use, never above the
// capacity.
func ExampleLimiter_Refund() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	lim, _ := redislimit.New(rdb, redislimit.FixedWindow(100, time.Hour))
	res, _ := lim.AllowN(ctx, "export:tenant-42", 80) // an estimate
	fmt.Println(res.Remaining)
	res, _ = lim.Refund(ctx, "export:tenant-42", 50) // 30 were used
	fmt.Println(res.Remaining)
	res, _ = lim.Refund(ctx, "export:tenant-42", 1000)
	fmt.Println(res.Remaining)
	// Output:
	// 20
	// 70
	// 100
}

// A new limit on trial: nobody is denied, and the calls it would deny are
// marked.
func ExampleWithShadowMode() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	lim, _ := redislimit.New(rdb, redislimit.FixedWindow(2, time.Minute), redislimit.WithShadowMode())
	for i := 0; i < 3; i++ {
		res, _ := lim.Allow(ctx, "203.0.113.7")
		fmt.Printf("allowed=%v shadowed=%v remaining=%d\n", res.Allowed, res.Shadowed, res.Remaining)
	}
	// Output:
	// allowed=true shadowed=false remaining=1
	// allowed=true shadowed=false remaining=0
	// allowed=true shadowed=true remaining=0
}

func ExampleCalendarQuota() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	// 3 calls a day per tenant, reset at midnight in New York. The fake
	// clock starts at 22:00 on 2026-03-08, the day DST starts there: a
	// day of 23 hours.
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		panic(err)
	}
	now := time.Date(2026, 3, 8, 22, 0, 0, 0, ny)
	lim, err := redislimit.New(rdb, redislimit.CalendarQuota(3, redislimit.Daily, ny),
		redislimit.WithClock(func() time.Time { return now }))
	if err != nil {
		panic(err)
	}
	fmt.Println("today lasts", lim.Quotas()[0].Window)
	for i := 0; i < 4; i++ {
		res, _ := lim.Allow(ctx, "tenant-42")
		fmt.Printf("allowed=%v remaining=%d retry after %v\n", res.Allowed, res.Remaining, res.RetryAfter)
	}
	now = now.Add(2 * time.Hour) // midnight: a new day
	res, _ := lim.Allow(ctx, "tenant-42")
	fmt.Printf("allowed=%v remaining=%d full again in %v\n", res.Allowed, res.Remaining, res.ResetAfter)
	// Output:
	// today lasts 23h0m0s
	// allowed=true remaining=2 retry after 0s
	// allowed=true remaining=1 retry after 0s
	// allowed=true remaining=0 retry after 0s
	// allowed=false remaining=0 retry after 2h0m0s
	// allowed=true remaining=2 full again in 24h0m0s
}

func ExampleWithLeases() {
	rdb, done := newRedis()
	defer done()
	ctx := context.Background()

	// A partner allows 50,000 calls a second across the fleet. Once the
	// key is hot, each process takes up to 1,000 units at a time from
	// Redis and admits calls from them in memory. The clock is fake: 100
	// calls a millisecond: the first millisecond's go to Redis one by
	// one, and measure the key's rate. 20 ms refill 1,000 units.
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC).UnixMicro())
	var leased atomic.Int64
	lim, err := redislimit.New(rdb, redislimit.TokenBucket(50_000, time.Second, 50_000),
		redislimit.WithLeases(1000, 100*time.Millisecond),
		redislimit.WithClock(func() time.Time { return time.UnixMicro(now.Load()) }),
		redislimit.WithObserver(func(_ context.Context, o redislimit.Observation) {
			if o.Leased {
				leased.Add(1)
			}
		}))
	if err != nil {
		panic(err)
	}
	admitted := 0
	for i := 0; i < 2000; i++ {
		if res, err := lim.Allow(ctx, "partner-api"); err == nil && res.Allowed {
			admitted++
		}
		if i%100 == 99 {
			now.Add(1000) // 1 ms
		}
	}
	fmt.Printf("admitted %d, %d from leases\n", admitted, leased.Load())

	// Before the process exits: give the unused units back.
	if err := lim.ReturnLeases(ctx); err != nil {
		panic(err)
	}
	res, _ := lim.Peek(ctx, "partner-api")
	fmt.Printf("Redis: remaining=%d\n", res.Remaining)
	// Output:
	// admitted 2000, 1900 from leases
	// Redis: remaining=49000
}
