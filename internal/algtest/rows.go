package algtest

import (
	"time"
	_ "time/tzdata" // the calendar tables' zones, on any system

	"github.com/redislimit/redislimit"
)

// Rows is every algorithm of redislimit, one row each; the tests and
// benchmarks that cover every algorithm range over it. The fuzz targets
// pick a row by index, so a new row goes at the end.
var Rows = []Row{FixedWindow, SlidingLog, SlidingWindow, TokenBucket, All, CalendarQuota}

const (
	s  = time.Second
	us = time.Microsecond
)

// FixedWindow is the row of [redislimit.FixedWindow].
var FixedWindow = Row{
	Name:   "FixedWindow",
	New:    redislimit.FixedWindow,
	Small:  redislimit.FixedWindow(5, time.Minute),
	Refill: time.Minute,
	Large:  redislimit.FixedWindow(1<<40, time.Hour),
	Tight:  redislimit.FixedWindow(TightLimit, time.Hour),
	Exact:  true,
	Local:  true,
	Steps: []StepTest{{Alg: redislimit.FixedWindow(3, 10*s), Steps: []Step{
		{0, 0, true, Allowed(3, 3, 0)},
		{0, 1, false, Allowed(3, 2, 10*s)},
		{1 * s, 1, false, Allowed(3, 1, 9*s)},
		{1 * s, 2, false, Denied(3, 1, 8*s, 8*s)},
		{0, 1, false, Allowed(3, 0, 8*s)},
		{1 * s, 1, false, Denied(3, 0, 7*s, 7*s)},
		{0, 0, true, Denied(3, 0, 7*s, 7*s)},
		{7*s - us, 1, false, Denied(3, 0, us, us)},
		{us, 1, false, Allowed(3, 2, 10*s)}, // a new window opens
		{15 * s, 0, true, Allowed(3, 3, 0)},
	}}},
	// Debt keeps the window denied until it ends; a refund to nothing
	// deletes the window, and the next call opens another.
	Charges: []OpTest{{Alg: redislimit.FixedWindow(3, 10*s), Steps: []OpStep{
		{0, OpDebit, 2, Allowed(3, 1, 10*s)},
		{1 * s, OpDebit, 5, Denied(3, 0, 9*s, 9*s)},
		{1 * s, OpAllow, 1, Denied(3, 0, 8*s, 8*s)},
		{0, OpRefund, 3, Denied(3, 0, 8*s, 8*s)}, // 4 of 3 still owed
		{0, OpRefund, 2, Allowed(3, 1, 8*s)},
		{0, OpAllow, 1, Allowed(3, 0, 8*s)},
		{0, OpRefund, 10, Allowed(3, 3, 0)}, // never above capacity
		{1 * s, OpAllow, 1, Allowed(3, 2, 10*s)},
		{0, OpDebit, 100, Denied(3, 0, 10*s, 10*s)},
		{10 * s, OpPeek, 0, Allowed(3, 3, 0)},
	}}},
	Random: []redislimit.Algorithm{redislimit.FixedWindow(7, 10*s)},
}

// SlidingLog is the row of [redislimit.SlidingLog].
var SlidingLog = Row{
	Name:   "SlidingLog",
	New:    redislimit.SlidingLog,
	Small:  redislimit.SlidingLog(5, time.Minute),
	Refill: time.Minute,
	Large:  redislimit.SlidingLog(1<<20, time.Hour),
	Tight:  redislimit.SlidingLog(TightLimit, time.Hour),
	Exact:  true,
	Local:  true,
	Steps: []StepTest{{Alg: redislimit.SlidingLog(3, 10*s), Steps: []Step{
		{0, 0, true, Allowed(3, 3, 0)},
		{0, 1, false, Allowed(3, 2, 10*s)},
		{1 * s, 1, false, Allowed(3, 1, 10*s)},
		{1 * s, 2, false, Denied(3, 1, 8*s, 9*s)}, // fits when the first entry leaves
		{0, 1, false, Allowed(3, 0, 10*s)},
		{1 * s, 1, false, Denied(3, 0, 7*s, 9*s)},
		{0, 3, false, Denied(3, 0, 9*s, 9*s)},  // needs all three gone
		{7 * s, 1, false, Allowed(3, 0, 10*s)}, // the first left, exactly
		{0, 0, true, Denied(3, 0, 1*s, 10*s)},
		{10 * s, 0, true, Allowed(3, 3, 0)},
	}}},
	// A debit logs at most limit entries and the log keeps its 2×limit
	// newest; a refund removes the newest entries.
	Charges: []OpTest{{Alg: redislimit.SlidingLog(3, 10*s), Steps: []OpStep{
		{0, OpDebit, 2, Allowed(3, 1, 10*s)},
		// 3 of the 5 logged at +1s: the call fits when they leave.
		{1 * s, OpDebit, 5, Denied(3, 0, 10*s, 10*s)},
		// 3 more at +2s; the two from +0 go, past the 6 newest.
		{1 * s, OpDebit, 100, Denied(3, 0, 10*s, 10*s)},
		{0, OpRefund, 4, Allowed(3, 1, 9*s)}, // 2 left, from +1s
		{0, OpAllow, 1, Allowed(3, 0, 10*s)},
		{0, OpRefund, 10, Allowed(3, 3, 0)}, // never above capacity
		{0, OpDebit, 4, Denied(3, 0, 10*s, 10*s)},
		{10 * s, OpPeek, 0, Allowed(3, 3, 0)},
	}}},
	Random: []redislimit.Algorithm{redislimit.SlidingLog(7, 10*s)},
}

// SlidingWindow is the row of [redislimit.SlidingWindow]. An exhausted key
// is full again two windows later: the previous window's units weigh in
// through the next window.
var SlidingWindow = Row{
	Name: "SlidingWindow",
	New: func(limit int, period time.Duration) redislimit.Algorithm {
		window := period / 2
		if period >= time.Millisecond {
			window = max(window, time.Millisecond)
		}
		return redislimit.SlidingWindow(limit, window)
	},
	Small:  redislimit.SlidingWindow(5, time.Minute),
	Refill: 2 * time.Minute,
	Large:  redislimit.SlidingWindow(1<<40, time.Hour),
	Tight:  redislimit.SlidingWindow(TightLimit, time.Hour),
	Exact:  true,
	Local:  true,
	// The previous window weighs in as it fades, RetryAfter is the exact
	// µs the call fits, and a clock going back refills nothing.
	Steps: []StepTest{{Alg: redislimit.SlidingWindow(3, 10*s), Steps: []Step{
		// 3 units per 10s; the grid starts at the first call, at +0.
		{0, 0, true, Allowed(3, 3, 0)},
		{0, 1, false, Allowed(3, 2, 20*s)}, // full again when the next window ends
		{4 * s, 2, false, Allowed(3, 0, 16*s)},
		// 3 in this window: the call fits in the next once 3×(1-e/10s)
		// rounds up to 2, at e = 3333334µs.
		{1 * s, 1, false, Denied(3, 0, 8333334*us, 15*s)},
		// +10s: the next window, where the previous 3 weigh in fully.
		{5 * s, 0, true, Denied(3, 0, 3333334*us, 10*s)},
		{0, 3, false, Denied(3, 0, 10*s, 10*s)}, // needs the previous window gone
		// +15s: half of the previous window's 3, rounded up, is 2.
		{5 * s, 1, false, Allowed(3, 0, 15*s)},
		// 1 + ⌈3×(1-e/10s)⌉ + 1 fits from e = 6666667µs.
		{0, 1, false, Denied(3, 0, 1666667*us, 15*s)},
		{1666666 * us, 1, false, Denied(3, 0, us, 13333334*us)},
		{us, 1, false, Allowed(3, 0, 13333333*us)},
		// The clock goes back 8s, before the window's start: the window
		// starts there, and the previous 3 count fully again.
		{-8 * s, 0, true, Denied(3, 0, 10*s, 20*s)},
		{10 * s, 0, true, Allowed(3, 1, 10*s)}, // the 2 are the previous window now
		{10 * s, 0, true, Allowed(3, 3, 0)},
	}}},
	// A debit weighs in as units do; a refund takes from the current
	// window's count, then from the previous one's.
	Charges: []OpTest{{Alg: redislimit.SlidingWindow(3, 10*s), Steps: []OpStep{
		{0, OpDebit, 2, Allowed(3, 1, 20*s)},
		// 6 in this window: a unit fits in the next once 6×(1-e/10s)
		// rounds up to 2, at e = 6666667µs.
		{5 * s, OpDebit, 4, Denied(3, 0, 11666667*us, 15*s)},
		{0, OpRefund, 5, Allowed(3, 2, 15*s)},
		// +10s: the next window; the refund takes the previous one's unit.
		{5 * s, OpRefund, 1, Allowed(3, 3, 0)},
		{0, OpAllow, 1, Allowed(3, 2, 20*s)},
	}}},
	Random: []redislimit.Algorithm{redislimit.SlidingWindow(7, 10*s), redislimit.SlidingWindow(5, 3*s)},
}

// TokenBucket is the row of [redislimit.TokenBucket]; New's bucket holds
// limit tokens and refills them all in period.
var TokenBucket = Row{
	Name: "TokenBucket",
	New: func(limit int, period time.Duration) redislimit.Algorithm {
		return redislimit.TokenBucket(limit, period, limit)
	},
	Small:  redislimit.TokenBucket(5, time.Minute, 5),
	Refill: time.Minute,
	Large:  redislimit.TokenBucket(1000, time.Second, 1<<36),
	Tight:  redislimit.TokenBucket(1, time.Hour, TightLimit),
	Local:  true,
	Steps: []StepTest{
		{Alg: redislimit.TokenBucket(1, 2*s, 3), Steps: []Step{
			{0, 0, true, Allowed(3, 3, 0)},
			{0, 1, false, Allowed(3, 2, 2*s)},
			{0, 2, false, Allowed(3, 0, 6*s)},
			{1 * s, 1, false, Denied(3, 0, 1*s, 5*s)},
			{1 * s, 1, false, Allowed(3, 0, 6*s)},
			{3 * s, 2, false, Denied(3, 1, 1*s, 3*s)},
			{1 * s, 2, false, Allowed(3, 0, 6*s)},
			{4 * s, 0, true, Allowed(3, 2, 2*s)},
			{60 * s, 0, true, Allowed(3, 3, 0)},
		}},
		{Name: "FractionalInterval", Alg: redislimit.TokenBucket(3, s, 3), Steps: []Step{
			// 1s/3 is 333333 + 1/3 µs, exactly: a token is back 333334µs
			// after it is taken, and three take 1s.
			{0, 3, false, Allowed(3, 0, s)},
			{0, 1, false, Denied(3, 0, 333334*us, s)},
			{333333 * us, 1, false, Denied(3, 0, us, 666667*us)},
			{us, 1, false, Allowed(3, 0, s)},
		}},
		{Name: "30000PerSecond", Alg: redislimit.TokenBucket(30000, s, 30000), Steps: []Step{
			// 33 + 1/3 µs a token: the k-th after the bucket empties is back
			// at ⌈100k/3⌉µs, 31 of them by +1034µs, 3000 in 100ms.
			{0, 30000, false, Allowed(30000, 0, s)},
			{0, 1, false, Denied(30000, 0, 34*us, s)},
			{33 * us, 1, false, Denied(30000, 0, us, 999967*us)},
			{us, 1, false, Allowed(30000, 0, s)},
			{1000 * us, 30, false, Allowed(30000, 0, s)},
			{0, 1, false, Denied(30000, 0, 33*us, s)},
			{33 * us, 1, false, Allowed(30000, 0, s)},
			{100 * time.Millisecond, 0, true, Allowed(30000, 3000, 900000*us)},
			{s, 0, true, Allowed(30000, 30000, 0)},
		}},
		{Name: "70000PerSecond", Alg: redislimit.TokenBucket(70000, s, 70000), Steps: []Step{
			// 14 + 2/7 µs a token: 71 back by +1015µs, 7000 in 100ms.
			{0, 70000, false, Allowed(70000, 0, s)},
			{0, 1, false, Denied(70000, 0, 15*us, s)},
			{14 * us, 1, false, Denied(70000, 0, us, 999986*us)},
			{us, 1, false, Allowed(70000, 0, s)},
			{1000 * us, 70, false, Allowed(70000, 0, s)},
			{0, 1, false, Denied(70000, 0, 14*us, s)},
			{14 * us, 1, false, Allowed(70000, 0, s)},
			{us, 1, false, Denied(70000, 0, 13*us, 999999*us)},
			{100 * time.Millisecond, 0, true, Allowed(70000, 7000, 899999*us)},
			{s, 0, true, Allowed(70000, 70000, 0)},
		}},
		{Name: "7Per3ms", Alg: redislimit.TokenBucket(7, 3*time.Millisecond, 7), Steps: []Step{
			// 428 + 4/7 µs a token, back at ⌈3000k/7⌉µs: 429, 858, 1286, …
			{0, 7, false, Allowed(7, 0, 3000*us)},
			{0, 1, false, Denied(7, 0, 429*us, 3000*us)},
			{428 * us, 1, false, Denied(7, 0, us, 2572*us)},
			{us, 1, false, Allowed(7, 0, 3000*us)},
			{428 * us, 2, false, Denied(7, 0, 429*us, 2572*us)},
			{429 * us, 2, false, Allowed(7, 0, 3000*us)},
			{1286 * us, 3, false, Allowed(7, 0, 3000*us)},
			{0, 0, true, Denied(7, 0, 428*us, 3000*us)},
			{3000 * us, 0, true, Allowed(7, 7, 0)},
		}},
		{Name: "100003PerDay", Alg: redislimit.TokenBucket(100003, 24*time.Hour, 100003), Steps: []Step{
			// 863974 + 8078/100003 µs a token: 4166 back in an hour.
			{0, 100003, false, Allowed(100003, 0, 24*time.Hour)},
			{0, 1, false, Denied(100003, 0, 863975*us, 24*time.Hour)},
			{863974 * us, 1, false, Denied(100003, 0, us, 86399136026*us)},
			{us, 1, false, Allowed(100003, 0, 24*time.Hour)},
			{time.Hour, 0, true, Allowed(100003, 4166, 23*time.Hour)},
			{0, 4166, false, Allowed(100003, 0, 86399316020*us)},
			{0, 1, false, Denied(100003, 0, 179994*us, 86399316020*us)},
			{24 * time.Hour, 0, true, Allowed(100003, 100003, 0)},
		}},
	},
	// The debt refills at the rate; the TAT stops MaxWindow from now.
	Charges: []OpTest{
		{Alg: redislimit.TokenBucket(1, 2*s, 3), Steps: []OpStep{
			{0, OpDebit, 2, Allowed(3, 1, 4*s)},
			{0, OpDebit, 5, Denied(3, 0, 10*s, 14*s)}, // 4 tokens owed
			{2 * s, OpAllow, 1, Denied(3, 0, 8*s, 12*s)},
			{0, OpRefund, 3, Denied(3, 0, 2*s, 6*s)}, // empty, no debt
			{0, OpRefund, 1, Allowed(3, 1, 4*s)},
			{0, OpRefund, 10, Allowed(3, 3, 0)}, // never above capacity
			{0, OpAllow, 3, Allowed(3, 0, 6*s)},
			{0, OpDebit, 1 << 50, Denied(3, 0, redislimit.MaxWindow-4*s, redislimit.MaxWindow)},
			{redislimit.MaxWindow - 6*s, OpPeek, 0, Denied(3, 0, 2*s, 6*s)},
			{2 * s, OpAllow, 1, Allowed(3, 0, 6*s)},
			// A clock going back holds a debt where it is.
			{0, OpDebit, 3, Denied(3, 0, 8*s, 12*s)},
			{-10 * s, OpPeek, 0, Denied(3, 0, 18*s, 22*s)},
			{0, OpAllow, 1, Denied(3, 0, 18*s, 22*s)},
		}},
		{Name: "FractionalInterval", Alg: redislimit.TokenBucket(3, s, 3), Steps: []OpStep{
			// 4 intervals of 333333 + 1/3 µs: 1333333 + 1/3.
			{0, OpDebit, 4, Denied(3, 0, 666667*us, 1333334*us)},
			{0, OpRefund, 1, Denied(3, 0, 333334*us, s)},
			{333334 * us, OpAllow, 1, Allowed(3, 0, s)},
			{0, OpRefund, 2, Allowed(3, 2, 333333*us)},
		}},
	},
	// 7s/3 a token in the last: not a whole number of µs.
	Random: []redislimit.Algorithm{redislimit.TokenBucket(1, 2*s, 7), redislimit.TokenBucket(3, 3*s, 5), redislimit.TokenBucket(3, 7*s, 4)},
}

// All is the row of [redislimit.All] of a token bucket and a fixed window.
// In Small and New the bucket is the smaller part, and the window is spent
// only by other calls; in Tight both parts are exhausted together.
var All = Row{
	Name: "All",
	New: func(limit int, period time.Duration) redislimit.Algorithm {
		return redislimit.All(redislimit.TokenBucket(limit, period, limit), redislimit.FixedWindow(2*limit, period))
	},
	Small:  redislimit.All(redislimit.TokenBucket(5, time.Minute, 5), redislimit.FixedWindow(9, time.Minute)),
	Refill: time.Minute,
	Large:  redislimit.All(TokenBucket.Large, FixedWindow.Large),
	Tight:  redislimit.All(TokenBucket.Tight, FixedWindow.Tight),
	// Remaining is the bucket's, which refills.
	Exact: false,
	Local: true,
	Parts: []Row{TokenBucket, FixedWindow},
	// Which part denies, and what each part keeps: a bucket of 2
	// refilling one every 2s, and 3 per 10s window.
	Steps: []StepTest{{Alg: redislimit.All(redislimit.TokenBucket(1, 2*s, 2), redislimit.FixedWindow(3, 10*s)), Steps: []Step{
		{0, 0, true, Whole(Allowed(2, 2, 0), Allowed(3, 3, 0))},
		{0, 1, false, Whole(Allowed(2, 1, 2*s), Allowed(3, 2, 10*s))},
		{0, 1, false, Whole(Allowed(2, 0, 4*s), Allowed(3, 1, 10*s))},
		// The bucket denies: the window keeps its unit.
		{0, 1, false, Whole(Denied(2, 0, 2*s, 4*s), Allowed(3, 1, 10*s))},
		{0, 0, true, Whole(Denied(2, 0, 2*s, 4*s), Allowed(3, 1, 10*s))},
		{2 * s, 1, false, Whole(Allowed(2, 0, 4*s), Allowed(3, 0, 8*s))},
		// The window denies: the bucket keeps its token.
		{2 * s, 1, false, Whole(Allowed(2, 1, 2*s), Denied(3, 0, 6*s, 6*s))},
		{0, 1, false, Whole(Allowed(2, 1, 2*s), Denied(3, 0, 6*s, 6*s))},
		// A new window; then both deny a cost of 2.
		{6 * s, 2, false, Whole(Allowed(2, 0, 4*s), Allowed(3, 1, 10*s))},
		{0, 2, false, Whole(Denied(2, 0, 4*s, 4*s), Denied(3, 1, 10*s, 10*s))},
		{20 * s, 0, true, Whole(Allowed(2, 2, 0), Allowed(3, 3, 0))},
	}}},
	// Every part is charged and refunded, whichever denies.
	Charges: []OpTest{{Alg: redislimit.All(redislimit.TokenBucket(1, 2*s, 2), redislimit.FixedWindow(3, 10*s)), Steps: []OpStep{
		{0, OpDebit, 3, Whole(Denied(2, 0, 4*s, 6*s), Denied(3, 0, 10*s, 10*s))},
		{4 * s, OpAllow, 1, Whole(Allowed(2, 1, 2*s), Denied(3, 0, 6*s, 6*s))},
		{0, OpRefund, 2, Whole(Allowed(2, 2, 0), Allowed(3, 2, 6*s))},
		{0, OpAllow, 2, Whole(Allowed(2, 0, 4*s), Allowed(3, 0, 6*s))},
	}}},
	Random: []redislimit.Algorithm{redislimit.All(redislimit.SlidingWindow(6, 5*s), redislimit.TokenBucket(1, s, 4), redislimit.SlidingLog(9, 20*s))},
}

// Zones of the calendar step tables: DST days of 23 and 25 hours, and a
// half-hour offset.
var (
	NewYork = mustZone("America/New_York")
	Paris   = mustZone("Europe/Paris")
	Kolkata = mustZone("Asia/Kolkata")
)

func mustZone(name string) *time.Location {
	loc, err := time.LoadLocation(name) // from time/tzdata when the system has none
	if err != nil {
		panic(err)
	}
	return loc
}

// after returns how long after Epoch t is: the Advance that takes a fake
// clock started at Epoch to t.
func after(t time.Time) time.Duration { return t.Sub(Epoch) }

// calendarPeriod returns the calendar period of CalendarQuota's New: the
// longest whose periods last at most period, so that an exhausted key is
// full again within it; an hour for anything shorter, and no period (an
// invalid configuration) for less than 1ms.
func calendarPeriod(period time.Duration) redislimit.Period {
	const day = 24 * time.Hour
	switch {
	case period < time.Millisecond:
		return 0
	case period < day:
		return redislimit.Hourly // up to an hour to be full again: see MinPeriod
	case period < 7*day:
		return redislimit.Daily // days of UTC, 24 hours each
	case period < 31*day:
		return redislimit.Weekly
	}
	return redislimit.Monthly
}

// CalendarQuota is the row of [redislimit.CalendarQuota]. Its periods are
// an hour or more, so New honours no period under an hour (MinPeriod),
// and its Random configurations are hourly and daily periods of zones
// offset so that a period ends within the first two minutes of the
// comparison: calls on a one-second grid cross one boundary rather than
// many. Epoch is on the hour, so Small's key, exhausted at Epoch, is full
// an hour later.
var CalendarQuota = Row{
	Name: "CalendarQuota",
	New: func(limit int, period time.Duration) redislimit.Algorithm {
		return redislimit.CalendarQuota(limit, calendarPeriod(period), nil)
	},
	Small:     redislimit.CalendarQuota(5, redislimit.Hourly, nil),
	Refill:    time.Hour,
	MinPeriod: time.Hour,
	Large:     redislimit.CalendarQuota(1<<40, redislimit.Daily, nil),
	Tight:     redislimit.CalendarQuota(TightLimit, redislimit.Hourly, nil),
	Exact:     true,
	Local:     true,
	Steps: []StepTest{
		{Name: "Hourly", Alg: redislimit.CalendarQuota(3, redislimit.Hourly, nil), Steps: []Step{
			{0, 0, true, Allowed(3, 3, 0)},
			{0, 1, false, Allowed(3, 2, time.Hour)},
			{20 * time.Minute, 2, false, Allowed(3, 0, 40*time.Minute)},
			{0, 1, false, Denied(3, 0, 40*time.Minute, 40*time.Minute)},
			{40*time.Minute - us, 1, false, Denied(3, 0, us, us)},
			{us, 1, false, Allowed(3, 2, time.Hour)}, // 13:00, a new hour
			// The clock goes back 2h30m, to 10:30: the count stays, in
			// the hour of the new time, which ends at 11:00.
			{-150 * time.Minute, 2, false, Allowed(3, 0, 30*time.Minute)},
			{0, 1, false, Denied(3, 0, 30*time.Minute, 30*time.Minute)},
			{30 * time.Minute, 0, true, Allowed(3, 3, 0)},
		}},
		{Name: "NewYorkDST", Alg: redislimit.CalendarQuota(3, redislimit.Daily, NewYork), Steps: []Step{
			// 2026-03-08 lasts 23 hours: 00:30 EST to midnight EDT is 22h30m.
			{after(time.Date(2026, 3, 8, 0, 30, 0, 0, NewYork)), 1, false, Allowed(3, 2, 22*time.Hour+30*time.Minute)},
			{22*time.Hour + 30*time.Minute - s, 2, false, Allowed(3, 0, s)},
			{0, 1, false, Denied(3, 0, s, s)},
			{s, 0, true, Allowed(3, 3, 0)}, // 2026-03-09 00:00 EDT
			// 2026-11-01 lasts 25 hours.
			{after(time.Date(2026, 11, 1, 0, 0, 0, 0, NewYork)) - after(time.Date(2026, 3, 9, 0, 0, 0, 0, NewYork)), 3, false, Allowed(3, 0, 25*time.Hour)},
			{24 * time.Hour, 1, false, Denied(3, 0, time.Hour, time.Hour)}, // 23:00 EST
			{time.Hour, 1, false, Allowed(3, 2, 24*time.Hour)},
		}},
		{Name: "ParisDST", Alg: redislimit.CalendarQuota(3, redislimit.Daily, Paris), Steps: []Step{
			// 2026-03-29 lasts 23 hours, from 23:00 UTC the day before.
			{after(time.Date(2026, 3, 29, 0, 0, 0, 0, Paris)) - s, 3, false, Allowed(3, 0, s)},
			{s, 3, false, Allowed(3, 0, 23*time.Hour)},
			{22 * time.Hour, 1, false, Denied(3, 0, time.Hour, time.Hour)},
			{time.Hour, 1, false, Allowed(3, 2, 24*time.Hour)},
			// 2026-10-25 lasts 25 hours, from 22:00 UTC the day before.
			{after(time.Date(2026, 10, 25, 0, 0, 0, 0, Paris)) - after(time.Date(2026, 3, 30, 0, 0, 0, 0, Paris)), 3, false, Allowed(3, 0, 25*time.Hour)},
			{24 * time.Hour, 1, false, Denied(3, 0, time.Hour, time.Hour)}, // 23:00 CET
			{time.Hour, 0, true, Allowed(3, 3, 0)},
		}},
		{Name: "KolkataHours", Alg: redislimit.CalendarQuota(2, redislimit.Hourly, Kolkata), Steps: []Step{
			// Epoch, 12:00 UTC, is 17:30 IST: the hour from 17:00 IST
			// ends at 12:30 UTC, and hours start at half past UTC hours.
			{0, 2, false, Allowed(2, 0, 30*time.Minute)},
			{30*time.Minute - s, 1, false, Denied(2, 0, s, s)},
			{s, 1, false, Allowed(2, 1, time.Hour)}, // 18:00 IST
			{30 * time.Minute, 1, false, Allowed(2, 0, 30*time.Minute)},
		}},
		{Name: "WeeksFromMonday", Alg: redislimit.CalendarQuota(2, redislimit.Weekly, nil), Steps: []Step{
			// Epoch is a Sunday, noon: the week ends at midnight.
			{0, 2, false, Allowed(2, 0, 12*time.Hour)},
			{0, 1, false, Denied(2, 0, 12*time.Hour, 12*time.Hour)},
			{12 * time.Hour, 1, false, Allowed(2, 1, 7*24*time.Hour)},
			{7*24*time.Hour - time.Hour, 1, false, Allowed(2, 0, time.Hour)},
			{0, 1, false, Denied(2, 0, time.Hour, time.Hour)},
			{time.Hour, 0, true, Allowed(2, 2, 0)},
		}},
		{Name: "MonthEnds", Alg: redislimit.CalendarQuota(2, redislimit.Monthly, Paris), Steps: []Step{
			// 2027-01-31 23:00 in Paris; February 2027 has 28 days.
			{after(time.Date(2027, 1, 31, 23, 0, 0, 0, Paris)), 2, false, Allowed(2, 0, time.Hour)},
			{0, 1, false, Denied(2, 0, time.Hour, time.Hour)},
			{time.Hour, 1, false, Allowed(2, 1, 28*24*time.Hour)},
			// February 2028 has 29 days.
			{after(time.Date(2028, 2, 29, 12, 0, 0, 0, Paris)) - after(time.Date(2027, 2, 1, 0, 0, 0, 0, Paris)), 2, false, Allowed(2, 0, 12*time.Hour)},
			{12*time.Hour - s, 1, false, Denied(2, 0, s, s)},
			{s, 1, false, Allowed(2, 1, 31*24*time.Hour-time.Hour)}, // March: DST takes an hour
		}},
		{Name: "LeapDay", Alg: redislimit.CalendarQuota(1, redislimit.Daily, nil), Steps: []Step{
			{after(time.Date(2028, 2, 28, 23, 59, 0, 0, time.UTC)), 1, false, Allowed(1, 0, time.Minute)},
			{time.Minute, 1, false, Allowed(1, 0, 24*time.Hour)}, // 2028-02-29
			{24*time.Hour - s, 1, false, Denied(1, 0, s, s)},
			{s, 1, false, Allowed(1, 0, 24*time.Hour)}, // 2028-03-01
		}},
	},
	// Debt keeps the period denied until it ends; a refund to nothing
	// deletes the key.
	Charges: []OpTest{{Alg: redislimit.CalendarQuota(3, redislimit.Hourly, nil), Steps: []OpStep{
		{0, OpDebit, 2, Allowed(3, 1, time.Hour)},
		{10 * time.Minute, OpDebit, 5, Denied(3, 0, 50*time.Minute, 50*time.Minute)},
		{0, OpAllow, 1, Denied(3, 0, 50*time.Minute, 50*time.Minute)},
		{0, OpRefund, 3, Denied(3, 0, 50*time.Minute, 50*time.Minute)}, // 4 of 3 still owed
		{0, OpRefund, 2, Allowed(3, 1, 50*time.Minute)},
		{0, OpRefund, 10, Allowed(3, 3, 0)}, // never above capacity
		{0, OpDebit, 100, Denied(3, 0, 50*time.Minute, 50*time.Minute)},
		{50 * time.Minute, OpPeek, 0, Allowed(3, 3, 0)},
		{0, OpAllow, 1, Allowed(3, 2, time.Hour)},
	}}},
	Random: []redislimit.Algorithm{
		// Hours that start at 1m40s past the UTC hour.
		redislimit.CalendarQuota(7, redislimit.Hourly, time.FixedZone("UTC-00:01:40", -100)),
		// Days that start at 12:02:30 UTC.
		redislimit.CalendarQuota(5, redislimit.Daily, time.FixedZone("UTC+11:57:30", 12*3600-150)),
	},
}
