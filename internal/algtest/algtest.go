// Package algtest is the table of redislimit's algorithms that the
// package's black-box tests and the benchmark harness read: one [Row] per
// algorithm, in [Rows]. A test that runs every algorithm ranges over
// Rows and takes what it needs from the row (a configuration, a
// constructor, a fact about the algorithm), so that adding a row is all it
// takes to put a new algorithm through every such test and benchmark.
//
// It imports redislimit, so the package's white-box tests cannot use it.
package algtest

import (
	"time"

	"github.com/redislimit/redislimit"
)

// Row is one algorithm of redislimit under test. Every configuration in a
// row is of that one algorithm, with the same Name.
type Row struct {
	// Name is the algorithm's constructor as users write it,
	// "TokenBucket". Subtests and benchmarks are named after it.
	Name string

	// New returns the algorithm with capacity limit units whose key,
	// exhausted, is full again after period, for tests that need a given
	// capacity or a short or long period. It passes the values on as
	// they are, valid or not, except that a period of at least 1ms
	// never gives a span under 1ms, the shortest any algorithm accepts.
	New func(limit int, period time.Duration) redislimit.Algorithm

	// Small has a capacity of 5 units over a minute: 5 per minute,
	// burst 5. The conformance suite runs it.
	Small redislimit.Algorithm
	// Refill is how long a key of Small, exhausted, takes to be full
	// again.
	Refill time.Duration

	// Large is never exhausted within an hour of benchmarking: the
	// benchmarks' configuration for calls that are all allowed.
	Large redislimit.Algorithm
	// Tight admits [TightLimit] units per hour, and every part of an All
	// is exhausted by the same TightLimit calls: the benchmarks'
	// configuration for keys saturated beforehand.
	Tight redislimit.Algorithm

	// MinPeriod is the shortest period that New honours; 0 when it
	// honours every period from 1ms. Given a shorter one (but at least
	// 1ms), New returns a valid configuration whose key takes up to
	// MinPeriod to be full again, and the tests that need a shorter
	// period skip the row.
	MinPeriod time.Duration

	// Exact reports whether Remaining after n calls of cost 1 on a fresh
	// key of Large is exactly Large's capacity minus n; not so for a
	// bucket, which refills meanwhile.
	Exact bool
	// Local reports whether the algorithm implements
	// [redislimit.LocalAlgorithm], and so also runs in process memory
	// ([redislimit.NewLocal], [redislimit.FailLocal]).
	Local bool

	// Parts holds, for an All, the rows of its parts' kinds, in order;
	// nil for any other algorithm.
	Parts []Row

	// Steps are the algorithm's step tests.
	Steps []StepTest
	// Charges are step tests of [redislimit.Limiter.Debit] and
	// [redislimit.Limiter.Refund] among decisions.
	Charges []OpTest
	// Random holds configurations for comparing the in-process limiter
	// with the scripts over random calls: capacities of a few units and
	// periods of a few whole seconds, so that calls on a one-second grid
	// cross many periods. Empty when the algorithm is not Local.
	Random []redislimit.Algorithm
}

// TightLimit is the capacity, in units per hour, of every [Row.Tight].
const TightLimit = 10

// Epoch is where the fake clocks of the step tests start.
var Epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Step is one call in a step test: move the clock by Advance, then call
// AllowN with cost N (or Peek when Peek is set, with N unused) and expect
// Want, every field of it.
type Step struct {
	Advance time.Duration
	N       int
	Peek    bool
	Want    redislimit.Result
}

// Op is what an [OpStep] calls.
type Op uint8

// Ops.
const (
	OpAllow  Op = iota // AllowN(ctx, key, N)
	OpPeek             // Peek(ctx, key); N is unused
	OpDebit            // Debit(ctx, key, N)
	OpRefund           // Refund(ctx, key, N)
)

// String returns the method's name.
func (o Op) String() string {
	return [...]string{"AllowN", "Peek", "Debit", "Refund"}[o]
}

// OpStep is one call in an [OpTest]: move the clock by Advance, then make
// the call Op with N and expect Want, every field of it.
type OpStep struct {
	Advance time.Duration
	Op      Op
	N       int
	Want    redislimit.Result
}

// OpTest is a sequence of calls on one key of a fresh limiter on Alg, with
// a fake clock that starts at [Epoch].
type OpTest struct {
	// Name tells the test apart from the row's others; "" for the first.
	Name  string
	Alg   redislimit.Algorithm
	Steps []OpStep
}

// StepTest is a sequence of calls on one key of a fresh limiter on Alg,
// with a fake clock that starts at [Epoch].
type StepTest struct {
	// Name tells the test apart from the row's others; "" for the first.
	Name  string
	Alg   redislimit.Algorithm
	Steps []Step
}

// Allowed returns the Result of an admitted call.
func Allowed(limit, remaining int, resetAfter time.Duration) redislimit.Result {
	return redislimit.Result{Allowed: true, Limit: limit, Remaining: remaining, ResetAfter: resetAfter}
}

// Denied returns the Result of a denied call.
func Denied(limit, remaining int, retryAfter, resetAfter time.Duration) redislimit.Result {
	return redislimit.Result{Limit: limit, Remaining: remaining, RetryAfter: retryAfter, ResetAfter: resetAfter}
}

// Whole returns the Result that [redislimit.All] documents for its parts'
// results: allowed when every part allows; Remaining the smallest;
// RetryAfter, when denied, the largest; ResetAfter the largest; Limit the
// smallest; and the parts in Parts.
func Whole(parts ...redislimit.Result) redislimit.Result {
	w := redislimit.Result{Allowed: true, Limit: parts[0].Limit, Remaining: parts[0].Remaining, Parts: parts}
	for _, p := range parts {
		w.Allowed = w.Allowed && p.Allowed
		w.Limit = min(w.Limit, p.Limit)
		w.Remaining = min(w.Remaining, p.Remaining)
		w.RetryAfter = max(w.RetryAfter, p.RetryAfter)
		w.ResetAfter = max(w.ResetAfter, p.ResetAfter)
		w.Degraded = w.Degraded || p.Degraded
	}
	if w.Allowed {
		w.RetryAfter = 0
	}
	return w
}
