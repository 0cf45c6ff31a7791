// Package admitcheck checks the admitted calls of a run, by their
// wall-clock times, against what a limit promises: the exactness tests
// of leased units (the root package's and bench/'s) read it.
//
// A call's decision takes effect at one moment between the call's start
// and its return: Redis TIME while the script runs, or the moment a lease
// admits from memory after Redis consumed the lease's units. The checks
// know only [Call.Start] and [Call.End], so they count what certainly
// happened: a call certainly took effect by t when it returned by t, and
// certainly took effect in [a, b) when it started at a or later and
// returned before b. Every process of a run must read the same clock
// (one machine's CLOCK_REALTIME: time.Now().UnixNano()), so no slack is
// needed between processes.
package admitcheck

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Call is one admitted call: when it started and when it returned, in
// Unix nanoseconds.
type Call struct {
	Start, End int64
}

// Calls is the admitted calls of a run, from any number of goroutines and
// processes, sorted for the checks. The zero value holds no calls; it is
// not safe for concurrent use.
type Calls struct {
	starts, ends []int64 // each sorted
}

// New returns the calls, sorted; it does not keep calls.
func New(calls []Call) *Calls {
	c := &Calls{starts: make([]int64, len(calls)), ends: make([]int64, len(calls))}
	for i, x := range calls {
		c.starts[i], c.ends[i] = x.Start, x.End
	}
	slices.Sort(c.starts)
	slices.Sort(c.ends)
	return c
}

// Len returns the number of calls.
func (c *Calls) Len() int { return len(c.ends) }

// FirstStart returns the earliest start of a call, a moment no later than
// the first unit was taken; 0 when there are none.
func (c *Calls) FirstStart() int64 {
	if len(c.starts) == 0 {
		return 0
	}
	return c.starts[0]
}

// ReturnedBefore returns how many calls returned before t.
func (c *Calls) ReturnedBefore(t int64) int { return countBelow(c.ends, t) }

// LastEnd returns the latest return of a call; 0 when there are none.
func (c *Calls) LastEnd() int64 {
	if len(c.ends) == 0 {
		return 0
	}
	return c.ends[len(c.ends)-1]
}

// CertainlyIn returns a lower bound on the calls that took effect in
// [a, b): those that returned before b less those that started before a.
func (c *Calls) CertainlyIn(a, b int64) int {
	n := countBelow(c.ends, b) - countBelow(c.starts, a)
	return max(n, 0)
}

// Record calls allow until a call returns at deadline (Unix ns) or later,
// and returns the admitted calls, each with its start and return times,
// and how many calls it made. An error of allow stops it and is returned.
func Record(deadline int64, allow func() (bool, error)) (admitted []Call, calls int64, err error) {
	for {
		start := time.Now().UnixNano()
		ok, err := allow()
		end := time.Now().UnixNano()
		if err != nil {
			return admitted, calls, err
		}
		calls++
		if ok {
			admitted = append(admitted, Call{Start: start, End: end})
		}
		if end >= deadline {
			return admitted, calls, nil
		}
	}
}

// countBelow returns how many of sorted are below x.
func countBelow(sorted []int64, x int64) int {
	i, _ := slices.BinarySearch(sorted, x)
	return i
}

// Excess is the worst moment of a check: where the calls certainly made
// by then went furthest past (Over > 0) or stayed closest under (Over <=
// 0) the bound at that moment. Over is -Inf when there was nothing to
// check.
type Excess struct {
	At    int64   // Unix ns
	Count int     // calls certainly made by At (or in the interval ending at At)
	Bound float64 // what the limit allows there
	Over  float64 // Count - Bound
}

func (e Excess) String() string {
	return fmt.Sprintf("%d calls by %s where %.3f are allowed (over by %.3f)",
		e.Count, time.Unix(0, e.At).UTC().Format("15:04:05.000000"), e.Bound, e.Over)
}

// TokenBucket checks that the calls never outran a token bucket of burst
// tokens refilling rate tokens per per that started full at t0: at every
// return t, the calls returned by t are at most burst + rate × (t − t0) /
// per. Pass [Calls.FirstStart] as t0 when the key was fresh: the bucket
// cannot have started full later than the first call began. It returns
// the worst moment; Over > 0 is a breach.
func (c *Calls) TokenBucket(t0 int64, burst, rate int, per time.Duration) Excess {
	worst := Excess{Over: math.Inf(-1)}
	for i, t := range c.ends {
		// At a run of equal returns only the last counts them all; the
		// others are no worse.
		if i+1 < len(c.ends) && c.ends[i+1] == t {
			continue
		}
		b := float64(burst) + float64(rate)*float64(t-t0)/float64(per)
		if over := float64(i+1) - b; over > worst.Over {
			worst = Excess{At: t, Count: i + 1, Bound: b, Over: over}
		}
	}
	return worst
}

// Sliding returns the worst interval [a, a+window) starting at a call's
// start, by the calls certainly made in it, against bound; Over > 0 is a
// breach.
func (c *Calls) Sliding(window time.Duration, bound int) Excess {
	worst := Excess{Over: math.Inf(-1)}
	for i, a := range c.starts {
		if i > 0 && c.starts[i-1] == a {
			continue
		}
		n := c.CertainlyIn(a, a+int64(window))
		if over := float64(n - bound); over > worst.Over {
			worst = Excess{At: a + int64(window), Count: n, Bound: float64(bound), Over: over}
		}
	}
	return worst
}

// Span is a moment known to lie in [Lo, Hi] (Unix ns).
type Span struct{ Lo, Hi int64 }

// Windows checks fixed windows of length window whose ends are known
// within ends (each a window's end, as a Peek's ResetAfter tells it): the
// calls certainly made in each window, that is in [end.Hi − window,
// end.Lo), are at most limit. It returns the worst window; Over > 0 is a
// breach.
func (c *Calls) Windows(ends []Span, window time.Duration, limit int) Excess {
	worst := Excess{Over: math.Inf(-1)}
	for _, e := range ends {
		n := c.CertainlyIn(e.Hi-int64(window), e.Lo)
		if over := float64(n - limit); over > worst.Over {
			worst = Excess{At: e.Lo, Count: n, Bound: float64(limit), Over: over}
		}
	}
	return worst
}

// Peeked is one Peek of a fixed window's key: when it started and
// returned (Unix ns) and the ResetAfter it reported.
type Peeked struct {
	Start, End int64
	ResetAfter time.Duration
}

// WindowEnds returns the window ends that peeks reveal, in order, each
// narrowed to what every peek of that window allows. A peek whose
// ResetAfter is 0 (no window open) reveals nothing. Peeks of one window
// are told from those of the next by their spans overlapping; spans of
// distinct windows lie at least a window apart, which needs each peek to
// take less than half a window. skew widens every span on both sides, for
// the rounding of ResetAfter and of Redis TIME (whole µs).
func WindowEnds(peeks []Peeked, skew time.Duration) []Span {
	var spans []Span
	for _, p := range peeks {
		if p.ResetAfter <= 0 {
			continue
		}
		spans = append(spans, Span{
			Lo: p.Start + int64(p.ResetAfter) - int64(skew),
			Hi: p.End + int64(p.ResetAfter) + int64(skew),
		})
	}
	slices.SortFunc(spans, func(a, b Span) int { return int(min(max(a.Lo-b.Lo, -1), 1)) })
	var out []Span
	for _, s := range spans {
		if n := len(out); n > 0 && s.Lo <= out[n-1].Hi {
			out[n-1] = Span{Lo: max(out[n-1].Lo, s.Lo), Hi: min(out[n-1].Hi, s.Hi)}
			continue
		}
		out = append(out, s)
	}
	return out
}

// Met reports, as an error, when a run does not show its limit met:
// when the calls made did not ask for more than 110% of bound, what the
// limit allowed over the run, or when fewer than 90% of bound were
// admitted. A machine too loaded to run the callers for a while fails
// it as surely as units left unused would, so a caller may run again
// before it concludes.
func Met(calls, admitted int64, bound float64) error {
	if float64(calls) < 1.1*bound {
		return fmt.Errorf("%d calls, under 110%% of the %.0f the limit allows", calls, bound)
	}
	if float64(admitted) < 0.9*bound {
		return fmt.Errorf("%d admitted of %.0f allowed (%.1f%%), want at least 90%%", admitted, bound, 100*float64(admitted)/bound)
	}
	return nil
}
