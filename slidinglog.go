package redislimit

import (
	_ "embed"
	"time"
)

//go:embed scripts/slidinglog.lua
var slidingLogLua string

// maxLogUnits bounds a sliding log's limit: the log keeps one entry per
// admitted unit (about 100 bytes each in Redis).
const maxLogUnits = 1 << 20

// SlidingLog returns an [Algorithm] that admits at most limit units in any
// period of length window, exactly: each admitted unit is logged with its
// time and counts until window has passed.
//
// limit must be from 1 to 1,048,576 and window between a millisecond and
// [MaxWindow] (used with µs precision); otherwise [New] returns an error
// wrapping [ErrInvalidConfig]. State per key grows with the units admitted
// in the last window, up to limit sorted-set entries (2×limit after
// [Limiter.Debit]); for limits in the thousands, [TokenBucket] keeps a constant few bytes instead.
//
// A key used with other parameters ([Limiter.Using], or two limiters with
// the same prefix) keeps its logged units, and the new limit and window
// judge them. Each call drops the units that have left the window in
// force, so a shorter window drops those past it at once; a longer one
// counts the units still logged: those the shorter window held at the
// last call under it (the key's TTL grows to keep them), never those
// dropped before, and none once the key has expired, when every unit had
// left the shorter window (in Redis, up to [TTLMargin] after the newest
// left it). Every period of the new window's length that starts at or
// after the change admits at most the new limit; one that starts before
// admits, from the change on, at most the new limit less the units in it
// that were still logged at the change.
//
// Debit and Refund: [Limiter.Debit] logs n units at the time of the call
// whether or not they fit, so the key denies until enough have left the
// window; a debit logs at most limit of them, and the log keeps its
// 2×limit newest units, removing older ones. Neither changes a decision:
// a call fits once all but limit-1 of the logged units have left, which
// depends only on the newest limit. So a key in debt is denied for at
// most one window after its last debit, and its state stays within
// 2×limit entries. [Limiter.Refund] removes the newest n units logged
// (those of a debit trimmed away cannot be given back), never more than
// the log holds.
func SlidingLog(limit int, window time.Duration) Algorithm {
	return slidingLog{limit: limit, window: window}
}

type slidingLog struct {
	limit  int
	window time.Duration
}

func (slidingLog) Name() string            { return "sl" }
func (slidingLog) title() string           { return "SlidingLog" }
func (a slidingLog) Limit() int            { return a.limit }
func (a slidingLog) Window() time.Duration { return a.window }
func (slidingLog) Body() string            { return slidingLogLua }

func (a slidingLog) Args() ([]any, error) { return a.appendArgs(nil) }

func (a slidingLog) appendArgs(dst []any) ([]any, error) {
	if err := checkUnits(a.title(), "limit", a.limit, maxLogUnits); err != nil {
		return nil, err
	}
	if err := checkSpan(a.title(), "window", a.window); err != nil {
		return nil, err
	}
	return append(dst, a.limit, a.window.Microseconds()), nil
}

// NewLocalState implements [LocalAlgorithm].
func (a slidingLog) NewLocalState(instances int) LocalState {
	return &slidingLogState{limit: localUnits(a.limit, instances), window: a.window.Microseconds()}
}

// slidingLogState is scripts/slidinglog.lua in memory. Where the script
// keeps one sorted-set entry per unit, it keeps one run per admission.
type slidingLogState struct {
	limit, window int64
	runs          []logRun // by time, oldest first
}

var _ carrier = (*slidingLogState)(nil)

// logRun is n units admitted at the same time (µs).
type logRun struct{ at, n int64 }

// expire drops the runs that have left the window at now, and returns
// the units left.
func (s *slidingLogState) expire(now int64) int64 {
	cut := 0
	for cut < len(s.runs) && s.runs[cut].at <= now-s.window {
		cut++
	}
	if cut > 0 {
		s.runs = append(s.runs[:0], s.runs[cut:]...)
	}
	var count int64
	for _, r := range s.runs {
		count += r.n
	}
	return count
}

func (s *slidingLogState) Decide(now int64, n int, consume bool) Result {
	count := s.expire(now)
	allowed := count+int64(n) <= s.limit
	var r Result
	r.Allowed = allowed
	switch {
	case allowed && consume:
		s.add(now, int64(n))
		count += int64(n)
		r.ResetAfter = micros(s.window)
	case count > 0:
		last := len(s.runs) - 1
		if s.runs[last].at > now {
			// The clock went back: entries from the future count as made now.
			for i := range s.runs {
				s.runs[i].at = min(s.runs[i].at, now)
			}
		}
		if !allowed {
			// The call fits once the oldest count+n-limit units have left.
			idx := count + int64(n) - s.limit - 1
			for _, run := range s.runs {
				if idx < run.n {
					r.RetryAfter = micros(run.at + s.window - now)
					break
				}
				idx -= run.n
			}
		}
		r.ResetAfter = micros(s.runs[last].at + s.window - now)
	}
	r.Remaining = int(max(s.limit-count, 0))
	return r
}

// add records n units admitted at now, keeping the runs in time order.
func (s *slidingLogState) add(now, n int64) {
	i := len(s.runs)
	for i > 0 && s.runs[i-1].at > now {
		i--
	}
	if i > 0 && s.runs[i-1].at == now {
		s.runs[i-1].n += n
		return
	}
	s.runs = append(s.runs, logRun{})
	copy(s.runs[i+1:], s.runs[i:])
	s.runs[i] = logRun{at: now, n: n}
}

// adjust implements adjuster, as the script's write does with a debit or
// a refund: a debit logs min(n, limit) units at now and keeps the 2×limit
// newest; a refund removes the newest -n units.
func (s *slidingLogState) adjust(now, n int64) bool {
	count := s.expire(now)
	if n > 0 {
		s.add(now, min(n, s.limit))
		s.dropOldest(count + min(n, s.limit) - 2*s.limit)
		return true
	}
	for k := -n; k > 0 && len(s.runs) > 0; {
		last := &s.runs[len(s.runs)-1]
		if last.n > k {
			last.n -= k
			break
		}
		k -= last.n
		s.runs = s.runs[:len(s.runs)-1]
	}
	return true
}

// dropOldest removes the oldest k units, if k > 0.
func (s *slidingLogState) dropOldest(k int64) {
	i := 0
	for k > 0 && i < len(s.runs) {
		if s.runs[i].n > k {
			s.runs[i].n -= k
			break
		}
		k -= s.runs[i].n
		i++
	}
	if i > 0 {
		s.runs = append(s.runs[:0], s.runs[i:]...)
	}
}

// carry implements carrier: the runs from holds, judged from now on by
// this state's limit and window, as the script judges a key's entries.
func (s *slidingLogState) carry(from LocalState, now int64) {
	if f, ok := from.(*slidingLogState); ok {
		s.runs = append(s.runs[:0], f.runs...)
	}
}

func (s *slidingLogState) ExpiresAt() int64 {
	if len(s.runs) == 0 {
		return 0
	}
	return s.runs[len(s.runs)-1].at + s.window
}
