package redislimit

import (
	_ "embed"
	"time"
)

//go:embed scripts/fixedwindow.lua
var fixedWindowLua string

// FixedWindow returns an [Algorithm] that admits at most limit units per
// window. A key's window opens at the first call it admits and closes window
// later; the first admitted call after that opens the next. Bursts of up to
// 2×limit can straddle two windows; use [SlidingWindow] to smooth them at
// the same constant cost, or [SlidingLog] where the limit must hold
// exactly.
//
// limit must be at least 1 and window between a millisecond and
// [MaxWindow] (used with µs precision); otherwise [New] returns an error
// wrapping [ErrInvalidConfig]. State per key: one short string.
//
// A key used with other parameters ([Limiter.Using], or two limiters with
// the same prefix) keeps its count and its window's start: the new limit
// judges the count (Remaining is the limit minus the count, at least 0),
// and a window still open ends at its start plus the new window, or is
// over at once if that is past; a window that had closed stays closed. So
// the window open at the change admits in all no more than the larger of
// the new limit and what it had admitted before the change.
func FixedWindow(limit int, window time.Duration) Algorithm {
	return fixedWindow{limit: limit, window: window}
}

type fixedWindow struct {
	limit  int
	window time.Duration
}

func (fixedWindow) Name() string            { return "fw" }
func (fixedWindow) title() string           { return "FixedWindow" }
func (a fixedWindow) Limit() int            { return a.limit }
func (a fixedWindow) Window() time.Duration { return a.window }
func (fixedWindow) Body() string            { return fixedWindowLua }

func (a fixedWindow) Args() ([]any, error) { return a.appendArgs(nil) }

func (a fixedWindow) appendArgs(dst []any) ([]any, error) {
	if err := checkUnits(a.title(), "limit", a.limit, maxUnits); err != nil {
		return nil, err
	}
	if err := checkSpan(a.title(), "window", a.window); err != nil {
		return nil, err
	}
	return append(dst, a.limit, a.window.Microseconds()), nil
}

// NewLocalState implements [LocalAlgorithm].
func (a fixedWindow) NewLocalState(instances int) LocalState {
	return &fixedWindowState{limit: localUnits(a.limit, instances), window: a.window.Microseconds()}
}

// fixedWindowState is scripts/fixedwindow.lua in memory.
type fixedWindowState struct {
	limit, window int64
	end, count    int64 // the window's end (µs) and the units it admitted
}

var _ carrier = (*fixedWindowState)(nil)

func (s *fixedWindowState) Decide(now int64, n int, consume bool) Result {
	if s.end <= now || s.count == 0 {
		s.end, s.count = now+s.window, 0
	} else if s.end > now+s.window {
		s.end = now + s.window // the clock went back
	}
	allowed := s.count+int64(n) <= s.limit
	if allowed && consume {
		s.count += int64(n)
	}
	left := s.end - now
	r := Result{Allowed: allowed, Remaining: int(max(s.limit-s.count, 0))}
	if !allowed {
		r.RetryAfter = micros(left)
	}
	if s.count > 0 {
		r.ResetAfter = micros(left)
	}
	return r
}

// adjust implements adjuster, as the script's write does with a debit or
// a refund.
func (s *fixedWindowState) adjust(now, n int64) bool {
	if s.end <= now || s.count == 0 {
		s.end, s.count = now+s.window, 0
	} else if s.end > now+s.window {
		s.end = now + s.window
	}
	s.count = min(max(s.count+n, 0), s.limit+maxUnits)
	return true
}

// carry implements carrier: the count of a window still open, which
// keeps its start, as the script reads a key written with another window.
func (s *fixedWindowState) carry(from LocalState, now int64) {
	f, ok := from.(*fixedWindowState)
	if !ok || f.count == 0 || f.end <= now {
		return
	}
	if end := f.end - f.window + s.window; end > now {
		s.end, s.count = end, f.count
	}
}

func (s *fixedWindowState) ExpiresAt() int64 {
	if s.count == 0 {
		return 0
	}
	return s.end
}
