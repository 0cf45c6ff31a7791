package redislimit

import (
	_ "embed"
	"fmt"
	"strconv"
	"time"
)

//go:embed scripts/calendar.lua
var calendarLua string

// Period is the calendar period of a [CalendarQuota]: an hour, a day, a
// week or a month of a time zone. The zero value is no period, which
// [New] refuses.
type Period int

// Periods.
const (
	// Hourly periods are the hours of the zone's clock: each starts when
	// its minutes and seconds read zero, so in a zone of a half-hour
	// offset (Asia/Kolkata, +05:30) at half past each UTC hour. Across a
	// DST change each still lasts 60 minutes; the hour the clock repeats
	// is two periods. (Where the offset moves by half an hour, as on Lord
	// Howe Island, the hour that holds the change ends at it, and the
	// period after lasts the 30 minutes to the next whole hour of the new
	// offset.)
	Hourly Period = iota + 1
	// Daily periods start at local midnight: a day lasts 23 or 25 hours
	// when the zone moves its clock that day. Where the clock skips
	// midnight, the day starts when it jumps.
	Daily
	// Weekly periods start on Monday at local midnight.
	Weekly
	// Monthly periods start on the 1st at local midnight, and last 28 to
	// 31 days.
	Monthly
)

// String returns the period's name, "Daily", or "Period(n)" for a value
// that is none of the package's.
func (p Period) String() string {
	switch p {
	case Hourly:
		return "Hourly"
	case Daily:
		return "Daily"
	case Weekly:
		return "Weekly"
	case Monthly:
		return "Monthly"
	}
	return "Period(" + strconv.Itoa(int(p)) + ")"
}

// start returns the start of the period of p holding t, in t's location.
func (p Period) start(t time.Time) time.Time {
	if p == Hourly {
		_, off := t.Zone()
		sec := t.Unix() + int64(off)
		into := sec % 3600
		if into < 0 {
			into += 3600
		}
		s := time.Unix(t.Unix()-into, 0).In(t.Location())
		// A change of offset since that whole hour (by half an hour, the
		// clock going back) starts a period: the hour before it ended
		// there, and the periods do not overlap.
		if zs, _ := t.ZoneBounds(); zs.After(s) {
			if _, before := zs.Add(-time.Second).Zone(); before != off {
				s = zs
			}
		}
		return s
	}
	y, m, d := t.Date()
	switch p {
	case Weekly:
		d -= (int(t.Weekday()) + 6) % 7 // days since Monday
	case Monthly:
		d = 1
	}
	return dayStart(y, m, d, t.Location())
}

// next returns the start of the period of p after the one that starts at
// s, which start returned.
func (p Period) next(s time.Time) time.Time {
	if p == Hourly {
		// The next whole hour, or sooner where the offset changed by half
		// an hour: the start of the period that holds the hour's end.
		n := s.Add(time.Hour)
		if st := p.start(n); st.After(s) {
			return st
		}
		return n
	}
	y, m, d := s.Date()
	switch p {
	case Daily:
		d++
	case Weekly:
		d += 7
	case Monthly:
		m++
	}
	return dayStart(y, m, d, s.Location())
}

// dayStart returns the first instant of the day y-m-d (normalised, as
// time.Date does) in loc: its midnight, or, where the clock skipped
// midnight, the moment it jumped.
func dayStart(y int, m time.Month, d int, loc *time.Location) time.Time {
	y, m, d = time.Date(y, m, d, 12, 0, 0, 0, time.UTC).Date()
	s := time.Date(y, m, d, 0, 0, 0, 0, loc)
	if yy, mm, dd := s.Date(); yy != y || mm != m || dd != d {
		// Midnight did not exist, and time.Date went back into the day
		// before: the day starts where that day's zone ends.
		_, s = s.ZoneBounds()
	}
	return s
}

// CalendarQuota returns an [Algorithm] that admits at most limit units
// per calendar period of loc: per hour, day, week (from Monday) or month,
// as [Period] says. The count resets when a period starts on loc's clock
// (local midnight for [Daily], whatever the UTC offset), so a day that
// DST shortens to 23 hours or stretches to 25 is still one period, and
// hours in a half-hour zone start at half past the UTC hour. A nil loc
// means UTC. [Result.RetryAfter] of a denial and [Result.ResetAfter] of a
// key holding usage are the time to the next period's start; a denied
// call consumes nothing.
//
// limit must be from 1 to 2^50 and period one of [Hourly], [Daily],
// [Weekly], [Monthly]; otherwise [New] returns an error wrapping
// [ErrInvalidConfig]. State per key: one short string, the current
// period's start and its count, with a TTL to the period's end plus
// [TTLMargin].
//
// The time zone rules are applied in Go, by the client: each call sends
// the script the starts of the previous, current, next and following
// periods, as the client's clock (its [WithClock] clock, else time.Now)
// places them, and the script picks the one that holds its time (Redis
// TIME, or the WithClock time). Clock skew at a boundary: a Redis clock
// up to a period ahead of or behind the client's still finds the exact
// bounds of its period; one further off decides in periods of the
// nearest known length laid end to end, exact for hours and off by at
// most a DST hour or a month's extra days otherwise. Clients sharing a
// key must agree on loc: a key counts in the zone of whoever calls it.
//
// A key used with other parameters ([Limiter.Using], or two limiters with
// the same prefix) keeps the count of the current period: a plan with
// another limit judges it (Remaining is the new limit minus the count, at
// least 0), so the period admits in all no more than the larger of the
// limits. Under another period or zone, a count whose stored period
// starts within the current one or later is kept in the current period
// (an hour's units go into the day), and one that started earlier is
// dropped, since its units cannot be placed. [Limiter.Using] finds the
// same derived Limiter for a CalendarQuota of equal limit and period and
// a zone of the same name and offsets. When the clock goes back across a
// boundary, the count stays, in the period of the new time.
func CalendarQuota(limit int, period Period, loc *time.Location) Algorithm {
	if loc == nil {
		loc = time.UTC
	}
	return calendarQuota{limit: limit, period: period, loc: loc}
}

type calendarQuota struct {
	limit  int
	period Period
	loc    *time.Location
}

func (calendarQuota) Name() string  { return "cal" }
func (calendarQuota) title() string { return "CalendarQuota" }
func (a calendarQuota) Limit() int  { return a.limit }
func (calendarQuota) Body() string  { return calendarLua }

// Window returns the length of the current period (time.Now in loc): a
// day is 23 to 25 hours, a month 28 to 31 days.
func (a calendarQuota) Window() time.Duration { return a.windowAt(time.Now()) }

// windowAt returns the length of the period holding now.
func (a calendarQuota) windowAt(now time.Time) time.Duration {
	if a.check() != nil {
		return 0
	}
	s := a.period.start(now.In(a.loc))
	return a.period.next(s).Sub(s)
}

// Args returns the arguments at time.Now: the limit and the starts of the
// previous, current, next and following periods, in µs.
func (a calendarQuota) Args() ([]any, error) { return a.appendArgs(nil) }

func (a calendarQuota) appendArgs(dst []any) ([]any, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	args, _, _ := a.argsAt(dst, time.Now().UnixMicro())
	return args, nil
}

func (a calendarQuota) check() error {
	if err := checkUnits(a.title(), "limit", a.limit, maxUnits); err != nil {
		return err
	}
	if a.period < Hourly || a.period > Monthly {
		return fmt.Errorf("%w: %s: period is %v, want Hourly, Daily, Weekly or Monthly", ErrInvalidConfig, a.title(), a.period)
	}
	return nil
}

// argsAt implements periodic: the arguments for a client whose clock reads
// now (µs), which hold while it reads from the current period's start to
// the next's.
func (a calendarQuota) argsAt(dst []any, now int64) (args []any, from, until int64) {
	t := time.UnixMicro(now).In(a.loc)
	b1 := a.period.start(t)
	b0 := a.period.start(b1.Add(-time.Nanosecond))
	b2 := a.period.next(b1)
	b3 := a.period.next(b2)
	return append(dst, a.limit, b0.UnixMicro(), b1.UnixMicro(), b2.UnixMicro(), b3.UnixMicro()), b1.UnixMicro(), b2.UnixMicro()
}

// identity implements periodic: the limit, the period and the zone, by
// name and by its offsets at two moments half a year apart, so that two
// fixed zones of one name but different offsets differ.
func (a calendarQuota) identity() string {
	_, winter := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).In(a.loc).Zone()
	_, summer := time.Date(2000, 7, 1, 0, 0, 0, 0, time.UTC).In(a.loc).Zone()
	return fmt.Sprintf("%d %v %q %d %d", a.limit, a.period, a.loc.String(), winter, summer)
}

// NewLocalState implements [LocalAlgorithm].
func (a calendarQuota) NewLocalState(instances int) LocalState {
	return &calendarState{limit: localUnits(a.limit, instances), period: a.period, loc: a.loc}
}

// calendarState is scripts/calendar.lua in memory, on periods computed
// from the time it is given.
type calendarState struct {
	limit      int64
	period     Period
	loc        *time.Location
	start, end int64 // the period the count belongs to (µs); end 0: none yet
	count      int64
}

var (
	_ carrier  = (*calendarState)(nil)
	_ adjuster = (*calendarState)(nil)
)

// settle moves the state to the period holding now: a later period starts
// from nothing; an earlier one (the clock went back) keeps the count.
func (s *calendarState) settle(now int64) {
	if s.end != 0 && s.start <= now && now < s.end {
		return
	}
	start, end := s.periodAt(now)
	if start > s.start {
		s.count = 0
	}
	s.start, s.end = start, end
}

// periodAt returns the bounds (µs) of the period holding now (µs).
func (s *calendarState) periodAt(now int64) (start, end int64) {
	if s.period < Hourly || s.period > Monthly {
		return now, now + 1 // New refuses such a period
	}
	b := s.period.start(time.UnixMicro(now).In(s.loc))
	return b.UnixMicro(), s.period.next(b).UnixMicro()
}

func (s *calendarState) Decide(now int64, n int, consume bool) Result {
	s.settle(now)
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
func (s *calendarState) adjust(now, n int64) bool {
	s.settle(now)
	s.count = min(max(s.count+n, 0), s.limit+maxUnits)
	return true
}

// carry implements carrier: a count whose period starts within the
// current one or later, as the script reads a key written under other
// parameters.
func (s *calendarState) carry(from LocalState, now int64) {
	f, ok := from.(*calendarState)
	if !ok || f.count == 0 {
		return
	}
	s.start, s.end = s.periodAt(now)
	if f.start >= s.start {
		s.count = f.count
	}
}

func (s *calendarState) ExpiresAt() int64 {
	if s.count == 0 {
		return 0
	}
	return s.end
}
