package redislimit_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

// CalendarQuota refuses what it cannot count, with ErrInvalidConfig, and
// writes nothing; Period names its values.
func TestCalendarQuotaValidates(t *testing.T) {
	m := redistest.Mini(t)
	c := redistest.NewClient(t, m.Addr())
	for _, alg := range []redislimit.Algorithm{
		redislimit.CalendarQuota(0, redislimit.Daily, nil),
		redislimit.CalendarQuota(-1, redislimit.Daily, nil),
		redislimit.CalendarQuota(1<<50+1, redislimit.Daily, nil),
		redislimit.CalendarQuota(5, 0, nil),
		redislimit.CalendarQuota(5, redislimit.Monthly+1, nil),
		redislimit.CalendarQuota(5, -1, time.UTC),
	} {
		if _, err := redislimit.New(c, alg); !errors.Is(err, redislimit.ErrInvalidConfig) {
			t.Errorf("New(%v): %v, want ErrInvalidConfig", alg, err)
		}
		if _, err := redislimit.NewLocal(alg); !errors.Is(err, redislimit.ErrInvalidConfig) {
			t.Errorf("NewLocal(%v): %v, want ErrInvalidConfig", alg, err)
		}
		if _, err := alg.Args(); !errors.Is(err, redislimit.ErrInvalidConfig) {
			t.Errorf("%v.Args(): %v, want ErrInvalidConfig", alg, err)
		}
	}
	if keys := m.Keys(); len(keys) != 0 {
		t.Errorf("keys written: %v", keys)
	}
	for p, want := range map[redislimit.Period]string{
		redislimit.Hourly: "Hourly", redislimit.Daily: "Daily", redislimit.Weekly: "Weekly",
		redislimit.Monthly: "Monthly", 0: "Period(0)", 9: "Period(9)",
	} {
		if got := p.String(); got != want {
			t.Errorf("Period(%d).String() = %q, want %q", int(p), got, want)
		}
	}
	// Args holds the limit and four period starts, a nil zone is UTC.
	args, err := redislimit.CalendarQuota(7, redislimit.Hourly, nil).Args()
	if err != nil || len(args) != 5 || args[0] != 7 {
		t.Fatalf("Args() = %v, %v; want the limit and four starts", args, err)
	}
	for i := 1; i < 4; i++ {
		if d := args[i+1].(int64) - args[i].(int64); d != int64(time.Hour/time.Microsecond) {
			t.Errorf("Args() = %v: starts %d and %d are %dµs apart, want an hour", args, i, i+1, d)
		}
	}
}

// Quotas reports the length of the period the limiter's clock is in: a
// DST day is 23 or 25 hours, February 28 or 29 days.
func TestCalendarQuotaWindow(t *testing.T) {
	for _, tc := range []struct {
		period redislimit.Period
		loc    *time.Location
		at     time.Time
		want   time.Duration
	}{
		{redislimit.Daily, algtest.NewYork, time.Date(2026, 3, 8, 12, 0, 0, 0, algtest.NewYork), 23 * time.Hour},
		{redislimit.Daily, algtest.NewYork, time.Date(2026, 11, 1, 12, 0, 0, 0, algtest.NewYork), 25 * time.Hour},
		{redislimit.Daily, algtest.Paris, time.Date(2026, 10, 25, 12, 0, 0, 0, algtest.Paris), 25 * time.Hour},
		{redislimit.Daily, nil, time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC), 24 * time.Hour},
		{redislimit.Weekly, algtest.Paris, time.Date(2026, 3, 29, 12, 0, 0, 0, algtest.Paris), 7*24*time.Hour - time.Hour},
		{redislimit.Monthly, nil, time.Date(2027, 2, 10, 0, 0, 0, 0, time.UTC), 28 * 24 * time.Hour},
		{redislimit.Monthly, nil, time.Date(2028, 2, 10, 0, 0, 0, 0, time.UTC), 29 * 24 * time.Hour},
		{redislimit.Hourly, algtest.Kolkata, time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC), time.Hour},
		// Santiago's clock skips from 2026-09-06 00:00 to 01:00: that day
		// starts at 01:00 and lasts 23 hours; the day before, 24.
		{redislimit.Daily, santiago, time.Date(2026, 9, 5, 12, 0, 0, 0, santiago), 24 * time.Hour},
		{redislimit.Daily, santiago, time.Date(2026, 9, 6, 12, 0, 0, 0, santiago), 23 * time.Hour},
	} {
		clk := clock.NewFake(tc.at)
		lim, err := redislimit.NewLocal(redislimit.CalendarQuota(10, tc.period, tc.loc), redislimit.WithClock(clk.Now))
		if err != nil {
			t.Fatal(err)
		}
		if q := lim.Quotas(); len(q) != 1 || q[0] != (redislimit.Quota{Limit: 10, Window: tc.want}) {
			t.Errorf("%v in %v at %v: Quotas() = %v, want 10 per %v", tc.period, tc.loc, tc.at, q, tc.want)
		}
	}
}

var santiago = func() *time.Location {
	loc, err := time.LoadLocation("America/Santiago")
	if err != nil {
		panic(err)
	}
	return loc
}()

// Where the clock skips midnight, the day starts when it jumps, in Redis
// as in process.
func TestCalendarQuotaSkippedMidnight(t *testing.T) {
	alg := redislimit.CalendarQuota(1, redislimit.Daily, santiago)
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		clk := clock.NewFake(time.Date(2026, 9, 5, 23, 59, 59, 0, santiago))
		lim, _ := b.newLimiter(t, alg, clk)
		runSteps(t, lim, clk, "k", []step{
			{N: 1, Want: allowed(1, 0, time.Second)},
			{Advance: time.Second, N: 1, Want: allowed(1, 0, 23*time.Hour)}, // 01:00 -03
			{Advance: 23*time.Hour - time.Second, N: 1, Want: denied(1, 0, time.Second, time.Second)},
			{Advance: time.Second, N: 1, Want: allowed(1, 0, 24*time.Hour)},
		})
	})
}

// skewed is CalendarQuota's body with the arguments a client computed for
// its own clock, fixed: the limiter's clock then plays the Redis clock.
type skewed struct {
	redislimit.Algorithm
	args []any
}

func (s skewed) Args() ([]any, error) { return s.args, nil }

// Clock skew between client and Redis: the script decides in the period
// that holds its own time, among the three the client sent, and beyond
// them in periods of the nearest known length.
func TestCalendarQuotaClockSkew(t *testing.T) {
	hour := func(h int) int64 { return algtest.Epoch.Add(time.Duration(h) * time.Hour).UnixMicro() }
	// The client's clock reads 12:00: periods from 11:00, 12:00, 13:00, 14:00.
	alg := skewed{redislimit.CalendarQuota(3, redislimit.Hourly, nil), []any{3, hour(-1), hour(0), hour(1), hour(2)}}
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		c := b.needRedis(t, "the script's own time is Redis's")
		for i, tc := range []struct {
			redis time.Duration // the Redis clock, from 12:00
			left  time.Duration // to the end of its period
		}{
			{-time.Second, time.Second},          // behind, across the boundary
			{90 * time.Minute, 30 * time.Minute}, // ahead, across the next
			{-105 * time.Minute, 45 * time.Minute},
			{140 * time.Minute, 40 * time.Minute},
			{-49 * time.Hour, time.Hour},
		} {
			clk := clock.NewFake(algtest.Epoch.Add(tc.redis))
			lim := newRedisLimiter(t, c, alg, clk)
			key := "k" + strconv.Itoa(i)
			runSteps(t, lim, clk, key, []step{
				{N: 3, Want: allowed(3, 0, tc.left)},
				{N: 1, Want: denied(3, 0, tc.left, tc.left)},
				{Advance: tc.left, Peek: true, Want: allowed(3, 3, 0)},
			})
		}
	})
}

// All composes a calendar quota with a token bucket: the bucket limits
// the rate, the day in Paris the total, and each keeps its own state.
func TestCalendarQuotaInAll(t *testing.T) {
	alg := redislimit.All(redislimit.TokenBucket(10, time.Second, 10), redislimit.CalendarQuota(10000, redislimit.Daily, algtest.Paris))
	// Epoch, 12:00 UTC, is 13:00 in Paris: 11 hours to midnight.
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		clk := clock.NewFake(epoch)
		lim, _ := b.newLimiter(t, alg, clk)
		runSteps(t, lim, clk, "user", []step{
			{N: 10, Want: whole(allowed(10, 0, time.Second), allowed(10000, 9990, 11*time.Hour))},
			{N: 1, Want: whole(denied(10, 0, 100*time.Millisecond, time.Second), allowed(10000, 9990, 11*time.Hour))},
			{Advance: time.Second, N: 10, Want: whole(allowed(10, 0, time.Second), allowed(10000, 9980, 11*time.Hour-time.Second))},
			// Past midnight in Paris: a new day, and the arguments with it.
			{Advance: 11*time.Hour - time.Second, N: 1, Want: whole(allowed(10, 9, 100*time.Millisecond), allowed(10000, 9999, 24*time.Hour))},
		})
		if q := lim.Quotas(); len(q) != 2 || q[1] != (redislimit.Quota{Limit: 10000, Window: 24 * time.Hour}) {
			t.Errorf("Quotas() = %v, want the day's 24h second", q)
		}
	})
}

// A change of period keeps what it can place: an hour's units were spent
// in the day, so the day keeps them; the day's may have been spent in
// earlier hours, so the hour drops them. Under another limit the count
// stays (TestUsingKeepsUsage).
func TestCalendarQuotaPeriodChanges(t *testing.T) {
	ctx := context.Background()
	limiterBackends(t, func(t *testing.T, b limiterBackend) {
		clk := clock.NewFake(epoch.Add(30 * time.Minute))
		hourly, _ := b.newLimiter(t, redislimit.CalendarQuota(10, redislimit.Hourly, nil), clk)
		daily := using(t, hourly, redislimit.CalendarQuota(10, redislimit.Daily, nil))
		if _, err := hourly.AllowN(ctx, "k", 4); err != nil {
			t.Fatal(err)
		}
		if r, err := daily.Peek(ctx, "k"); err != nil || !cmp.Equal(r, allowed(10, 6, 11*time.Hour+30*time.Minute)) {
			t.Errorf("the day after 4 units in its hour: %+v, %v; want 6 remaining", r, err)
		}
		if r, err := daily.AllowN(ctx, "k", 2); err != nil || r.Remaining != 4 {
			t.Errorf("daily AllowN(2) = %+v, %v; want 4 remaining", r, err)
		}
		if r, err := hourly.Peek(ctx, "k"); err != nil || !cmp.Equal(r, allowed(10, 10, 0)) {
			t.Errorf("the hour after the day's units: %+v, %v; want full", r, err)
		}
	})
}

// Using finds one derived Limiter for a CalendarQuota of equal limit,
// period and zone, however the zone was loaded, and another for other
// parameters, zones of one name but other offsets among them.
func TestCalendarQuotaUsingIdentity(t *testing.T) {
	lim, err := redislimit.NewLocal(redislimit.FixedWindow(5, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	paris2, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	a := using(t, lim, redislimit.CalendarQuota(100, redislimit.Daily, algtest.Paris))
	if b := using(t, lim, redislimit.CalendarQuota(100, redislimit.Daily, paris2)); b != a {
		t.Error("Using an equal CalendarQuota with the zone loaded again gave another Limiter")
	}
	for _, other := range []redislimit.Algorithm{
		redislimit.CalendarQuota(101, redislimit.Daily, algtest.Paris),
		redislimit.CalendarQuota(100, redislimit.Weekly, algtest.Paris),
		redislimit.CalendarQuota(100, redislimit.Daily, algtest.NewYork),
	} {
		if using(t, lim, other) == a {
			t.Errorf("Using(%v) gave the Limiter of other parameters", other)
		}
	}
	x1 := using(t, lim, redislimit.CalendarQuota(1, redislimit.Hourly, time.FixedZone("X", 1800)))
	if x2 := using(t, lim, redislimit.CalendarQuota(1, redislimit.Hourly, time.FixedZone("X", 0))); x2 == x1 {
		t.Error("two fixed zones named X with other offsets share a Limiter")
	}
	all := func() redislimit.Algorithm {
		return redislimit.All(redislimit.TokenBucket(10, time.Second, 10), redislimit.CalendarQuota(10000, redislimit.Daily, algtest.Paris))
	}
	if using(t, lim, all()) != using(t, lim, all()) {
		t.Error("Using an equal All with a CalendarQuota part twice gave two Limiters")
	}
}

// The arguments are computed once per period: decisions allocate no more
// than FixedWindow's, and a clock crossing boundaries under concurrent
// calls (run with -race) always sends the arguments of its period.
func TestCalendarQuotaHotPath(t *testing.T) {
	ctx := context.Background()
	m := redistest.Mini(t)
	c := redistest.NewClient(t, m.Addr())
	clk := clock.NewFake(epoch)
	cal := newRedisLimiter(t, c, redislimit.CalendarQuota(1<<40, redislimit.Hourly, nil), clk)
	fw := newRedisLimiter(t, c, redislimit.FixedWindow(1<<40, time.Hour), clk)
	allocs := func(lim *redislimit.Limiter) float64 {
		return testing.AllocsPerRun(200, func() { _, _ = lim.Allow(ctx, "k") })
	}
	if a, b := allocs(cal), allocs(fw); a > b {
		t.Errorf("Allow on CalendarQuota: %v allocations, on FixedWindow %v; want no more", a, b)
	}
	if n := testing.AllocsPerRun(100, func() { redislimit.PeriodArgs(cal, clk.Now().UnixMicro()) }); n != 0 {
		t.Errorf("the arguments within a period: %v allocations, want 0", n)
	}

	local := redislimit.CalendarQuota(1<<40, redislimit.Hourly, nil).(redislimit.LocalAlgorithm)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				at := epoch.Add(time.Duration((g*7+i)%50) * 37 * time.Minute)
				got := redislimit.PeriodArgs(cal, at.UnixMicro())
				st := local.NewLocalState(1)
				want := st.Decide(at.UnixMicro(), 1, true).ResetAfter
				if end := time.UnixMicro(got[3].(int64)); end.Sub(at) != want {
					t.Errorf("at %v: arguments %v, whose period ends %v later; want %v", at, got, end.Sub(at), want)
					return
				}
			}
		})
	}
	wg.Wait()
}
