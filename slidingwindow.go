package redislimit

import (
	_ "embed"
	"fmt"
	"math"
	"time"
)

//go:embed scripts/slidingwindow.lua
var slidingWindowLua string

// maxWindowUnits bounds a sliding window's limit. The estimate weighs the
// previous window's count in double-precision arithmetic: with counts up
// to 2^40 the weighted count is off by less than 1/4096 of a unit, so the
// estimate is the exact ceiling except where the exact weighted count lies
// that close to a whole number (it may then be one unit off), and counts
// and their sums stay exact integers.
const maxWindowUnits = 1 << 40

// SlidingWindow returns an [Algorithm] that approximates a sliding window
// of length window with two counters per key: the units admitted in the
// current window and in the previous one, the previous weighted by how
// much of it still overlaps the window that ends now. A key's windows form
// a grid that starts at the first call it admits. At elapsed time e into
// the current window, the estimate is
//
//	cur + ⌈prev × (window − e) / window⌉
//
// and a call of cost n is admitted when the estimate plus n is at most
// limit. On steady traffic it admits close to limit units in any window;
// in the worst case a window-long interval admits at most 2×limit−1 units
// (a previous window's units all at its very end, then the current window
// filling as their weight fades). Use [SlidingLog] where the limit must
// hold exactly.
//
// [Result.RetryAfter] is when the same call fits if nothing else
// consumes; [Result.ResetAfter] runs to the end of the next window while
// the current window holds units, so both are at most two windows.
//
// limit must be from 1 to 2^40 and window between a millisecond and
// [MaxWindow]/2 (used with µs precision, so that durations stay within
// MaxWindow); otherwise [New] returns an error wrapping
// [ErrInvalidConfig]. State per key: one short string, whatever the limit
// and the traffic, where [SlidingLog] keeps one entry per admitted unit.
//
// A key used with other parameters ([Limiter.Using], or two limiters with
// the same prefix) keeps its counts, and the new limit judges them. When
// the window changes and now is within a new window's length of the
// current window's start, the grid stays, and its counts become those of
// windows of the new length: a longer window weighs the previous window's
// units more (the estimate never falls), a shorter one less. Otherwise
// (the window shrank) the grid starts again at the change, and the units
// of the current window, which the counts cannot place in time, count in
// full as those of the previous window, fading over one new window: recent
// usage is not forgotten. A key used alternately with two windows neither
// drifts nor sticks. From the change on the bound above holds for the new
// limit: at most 2×limit−1 units in any window-long interval.
func SlidingWindow(limit int, window time.Duration) Algorithm {
	return slidingWindow{limit: limit, window: window}
}

type slidingWindow struct {
	limit  int
	window time.Duration
}

func (slidingWindow) Name() string            { return "sw" }
func (slidingWindow) title() string           { return "SlidingWindow" }
func (a slidingWindow) Limit() int            { return a.limit }
func (a slidingWindow) Window() time.Duration { return a.window }
func (slidingWindow) Body() string            { return slidingWindowLua }

func (a slidingWindow) Args() ([]any, error) { return a.appendArgs(nil) }

func (a slidingWindow) appendArgs(dst []any) ([]any, error) {
	if err := checkUnits(a.title(), "limit", a.limit, maxWindowUnits); err != nil {
		return nil, err
	}
	if err := checkSpan(a.title(), "window", a.window); err != nil {
		return nil, err
	}
	if a.window > MaxWindow/2 {
		return nil, fmt.Errorf("%w: sliding window: window is %v, want at most %v (half of MaxWindow: durations span two windows)", ErrInvalidConfig, a.window, MaxWindow/2)
	}
	return append(dst, a.limit, a.window.Microseconds()), nil
}

// NewLocalState implements [LocalAlgorithm].
func (a slidingWindow) NewLocalState(instances int) LocalState {
	return &slidingWindowState{limit: localUnits(a.limit, instances), window: a.window.Microseconds()}
}

// slidingWindowState is scripts/slidingwindow.lua in memory. Its floating
// point operations are the script's, in the script's order, with explicit
// conversions so that the compiler fuses none of them: the tests compare
// its Results with the script's.
type slidingWindowState struct {
	limit, window    int64
	start, cur, prev int64 // the current window's start (µs), the units of it and of the one before
}

var _ carrier = (*slidingWindowState)(nil)

func (s *slidingWindowState) Decide(now int64, n int, consume bool) Result {
	w, c := s.window, int64(n)
	s.advance(now)
	elapsed := now - s.start
	est := s.cur + weigh(s.prev, w, elapsed)
	allowed := est+c <= s.limit
	if allowed && consume {
		s.cur += c
		est += c
	}
	var left int64 // how long the state still matters
	if s.cur > 0 || s.prev > 0 {
		left = s.ExpiresAt() - now
	}
	r := Result{Allowed: allowed, Remaining: int(max(s.limit-est, 0)), ResetAfter: micros(left)}
	if !allowed {
		if s.cur+c <= s.limit {
			r.RetryAfter = micros(earliest(s.prev, s.limit-c-s.cur, elapsed+1, w) - elapsed)
		} else {
			r.RetryAfter = micros(w - elapsed + earliest(s.cur, s.limit-c, 0, w))
		}
	}
	return r
}

// advance moves the state's grid to now, as the script's decide does.
func (s *slidingWindowState) advance(now int64) {
	w := s.window
	if now < s.start {
		s.start = now // the clock went back
	} else if d := now - s.start; d >= w {
		if d < 2*w {
			s.prev = s.cur
		} else {
			s.prev = 0
		}
		s.start, s.cur = s.start+w, 0
	}
	if s.cur == 0 && s.prev == 0 {
		s.start = now
	}
}

// adjust implements adjuster, as the script's write does with a debit or
// a refund: a debit adds to the current window's count; a refund takes
// from it, then from the previous window's.
func (s *slidingWindowState) adjust(now, n int64) bool {
	s.advance(now)
	if n > 0 {
		s.cur = min(s.cur+n, s.limit+maxUnits)
		return true
	}
	k := min(s.cur, -n)
	s.cur, s.prev = s.cur-k, max(s.prev+n+k, 0)
	return true
}

// carry implements carrier: from's counts, on a grid of this state's
// window, as the script reads a key written with another window.
func (s *slidingWindowState) carry(from LocalState, now int64) {
	f, ok := from.(*slidingWindowState)
	if !ok {
		return
	}
	s.start, s.cur, s.prev = f.start, f.cur, f.prev
	if f.window != s.window {
		s.start, s.cur, s.prev = regrid(now, s.window, f.start, f.cur, f.prev, f.window)
	}
}

// regrid is the script's function of the same name: start, cur and prev
// on a grid of window µs for a state on a grid of w0 µs.
func regrid(now, window, start, cur, prev, w0 int64) (int64, int64, int64) {
	if now < start {
		start = now
	} else if d := now - start; d >= w0 {
		if d < 2*w0 {
			prev = cur
		} else {
			prev = 0
		}
		start, cur = start+w0, 0
	}
	if now-start >= window {
		return now, 0, cur
	}
	return start, cur, prev
}

// ExpiresAt returns the end of the next window while the current one
// holds units, of this one while only the previous does, and 0 for an
// empty state.
func (s *slidingWindowState) ExpiresAt() int64 {
	switch {
	case s.cur > 0:
		return s.start + 2*s.window
	case s.prev > 0:
		return s.start + s.window
	}
	return 0
}

// weigh returns ⌈p × ((w − x) / w)⌉ as the script computes it.
func weigh(p, w, x int64) int64 {
	return int64(math.Ceil(float64(p) * float64(float64(w-x)/float64(w))))
}

// earliest is the script's function of the same name: the least x in
// [lo, w] with weigh(p, w, x) <= b, where p > 0, b >= 0 and x = w
// qualifies.
func earliest(p, b, lo, w int64) int64 {
	fw := float64(w)
	x := int64(math.Ceil(fw - float64(float64(fw*float64(b))/float64(p))))
	x = min(max(x, lo), w)
	for range 64 {
		if x <= lo || weigh(p, w, x-1) > b {
			break
		}
		x--
	}
	for range 64 {
		if x >= w || weigh(p, w, x) <= b {
			break
		}
		x++
	}
	return x
}
