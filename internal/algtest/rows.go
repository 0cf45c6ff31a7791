package algtest

import (
	"time"

	"github.com/redislimit/redislimit"
)

// Rows is every algorithm of redislimit, one row each; the tests and
// benchmarks that cover every algorithm range over it. The fuzz targets
// pick a row by index, so a new row goes at the end.
var Rows = []Row{FixedWindow, SlidingLog, SlidingWindow, TokenBucket, All}

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
