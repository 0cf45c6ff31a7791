package redislimit

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redislimit/redislimit/internal/luascript"
)

// MaxParts is the most algorithms one [All] may combine, which keeps its
// script within Lua's limit of 200 local variables.
const MaxParts = 8

// All returns an [Algorithm] that admits a call only when every one of
// algs admits it, and then consumes it from every one of them; a call that
// any of them denies consumes from none. Each decision is still one script
// call: the parts decide in one script, atomically, in one round trip.
//
//	lim, err := redislimit.New(rdb, redislimit.All(
//		redislimit.TokenBucket(10, time.Second, 10),
//		redislimit.FixedWindow(1000, time.Hour),
//		redislimit.FixedWindow(10000, 24*time.Hour),
//	))
//
// Its [Result] merges the parts' results, which [Result.Parts] holds in
// the order of algs: Allowed when every part allows; Remaining the
// smallest part's; RetryAfter, when denied, the largest part's (the wait
// until every part can admit the same call); ResetAfter the largest;
// Limit the smallest capacity, so that [Limiter.AllowN] refuses a cost
// above it with [ErrCostExceedsLimit].
//
// Each part keeps its own Redis key (the package documentation, "Keys",
// has the layout), so two parts never share state, whatever their kinds,
// and every part of one user key sits in that key's Cluster slot. An All
// nested in algs is flattened into its parts.
//
// [New] refuses a nil part, a part with no body, an invalid part, more
// than [MaxParts] parts, and All of no algorithms, with an error wrapping
// [ErrInvalidConfig]. With [NewLocal]
// or [FailLocal], every part must implement [LocalAlgorithm], and the
// parts decide in process memory as they would in Redis.
func All(algs ...Algorithm) Algorithm {
	a := allOf{}
	for i, p := range algs {
		switch {
		case isNil(p):
			a.err = fmt.Errorf("%w: All: part %d: %w", ErrInvalidConfig, i, ErrNilAlgorithm)
		default:
			if inner, ok := p.(allOf); ok {
				if inner.err != nil {
					a.err = inner.err
				}
				a.parts = append(a.parts, inner.parts...)
				continue
			}
			a.parts = append(a.parts, p)
		}
	}
	switch {
	case a.err != nil:
	case len(a.parts) == 0:
		a.err = fmt.Errorf("%w: All of no algorithms", ErrInvalidConfig)
	case len(a.parts) > MaxParts:
		a.err = fmt.Errorf("%w: All of %d parts, want at most %d", ErrInvalidConfig, len(a.parts), MaxParts)
	}
	if a.err != nil {
		return a
	}
	bodies := make([]string, len(a.parts))
	argc := make([]int, len(a.parts))
	for i, p := range a.parts {
		pa, err := checkAlgorithm(p, nil)
		if err != nil {
			a.err = fmt.Errorf("All: part %d: %w", i, err)
			return a
		}
		bodies[i], argc[i] = p.Body(), len(pa)
		a.args = append(a.args, pa...)
		if periodicOf(p) != nil {
			a.periodic = true
		}
	}
	a.argc = argc
	a.src = luascript.Assemble(bodies, argc, TTLMargin)
	return a
}

// allOf is the Algorithm that All returns.
type allOf struct {
	parts []Algorithm
	args  []any  // the parts' arguments, one after another, when All was called
	argc  []int  // how many of args each part has
	src   string // the script
	err   error  // why the parts cannot be combined
	// periodic is set when a part's arguments depend on the time: the
	// Limiter then takes them from argsAt.
	periodic bool
}

func (allOf) Name() string  { return "all" }
func (allOf) title() string { return "All" }

// Limit returns the smallest capacity of the parts.
func (a allOf) Limit() int {
	if a.err != nil {
		return 0
	}
	m := a.parts[0].Limit()
	for _, p := range a.parts[1:] {
		m = min(m, p.Limit())
	}
	return m
}

// Args returns the parts' arguments, one after another: the script's
// ARGV[4] onwards. All reads them once, when it is called, except those
// that depend on the time ([CalendarQuota]'s), which are read now.
func (a allOf) Args() ([]any, error) {
	if a.err == nil && a.periodic {
		args, _, _ := a.argsAt(nil, time.Now().UnixMicro())
		return args, nil
	}
	return a.args, a.err
}

// argsAt implements periodic: the parts' arguments at now, the time
// dependent ones computed, the others as All read them; they hold while
// every part's do.
func (a allOf) argsAt(dst []any, now int64) (args []any, from, until int64) {
	from, until = math.MinInt64, math.MaxInt64
	off := 0
	for i, p := range a.parts {
		if pp := periodicOf(p); pp != nil {
			var f, u int64
			dst, f, u = pp.argsAt(dst, now)
			from, until = max(from, f), min(until, u)
		} else {
			dst = append(dst, a.args[off:off+a.argc[i]]...)
		}
		off += a.argc[i]
	}
	return dst, from, until
}

// identity implements periodic: the parts' names and parameters, in
// order.
func (a allOf) identity() string {
	var b strings.Builder
	off := 0
	for i, p := range a.parts {
		b.WriteString(p.Name())
		if pp := periodicOf(p); pp != nil {
			b.WriteString(strconv.Quote(pp.identity()))
		} else {
			fmt.Fprint(&b, a.args[off:off+a.argc[i]])
		}
		off += a.argc[i]
	}
	return b.String()
}

// Body returns "": All's script is assembled from its parts' bodies
// (script), and All takes part in another All by being flattened.
func (allOf) Body() string { return "" }

// Window returns the longest of the parts' windows.
func (a allOf) Window() time.Duration {
	var w time.Duration
	for _, q := range quotasOf(a, time.Now()) {
		w = max(w, q.Window)
	}
	return w
}

// script returns the source of the script that All assembled.
func (a allOf) script() string { return a.src }

// keyNames returns the names of the parts' keys, in order: "all:" + i +
// ":" + the part's name.
func (a allOf) keyNames() []string {
	names := make([]string, len(a.parts))
	for i, p := range a.parts {
		names[i] = "all:" + strconv.Itoa(i) + ":" + p.Name()
	}
	return names
}

// limits returns the parts' capacities.
func (a allOf) limits() []int {
	l := make([]int, len(a.parts))
	for i, p := range a.parts {
		l[i] = p.Limit()
	}
	return l
}

// NewLocalState implements [LocalAlgorithm]. New checks that every part
// implements it first (localParts).
func (a allOf) NewLocalState(instances int) LocalState {
	s := &allState{}
	if a.err != nil || a.localParts() != nil {
		return s // New refuses such an All; a state of no parts denies
	}
	for _, p := range a.parts {
		s.parts = append(s.parts, p.(LocalAlgorithm).NewLocalState(instances))
		s.limits = append(s.limits, int(localUnits(p.Limit(), instances)))
	}
	return s
}

// localParts returns an error wrapping ErrInvalidConfig when a part cannot
// decide in process memory.
func (a allOf) localParts() error {
	for i, p := range a.parts {
		if _, ok := p.(LocalAlgorithm); !ok {
			return fmt.Errorf("%w: All: part %d (%s) cannot run in process memory (no NewLocalState method)", ErrInvalidConfig, i, titleOf(p))
		}
	}
	return nil
}

// allState is the script that All assembles, in memory: every part
// decides without consuming, and only when all of them allow does each
// consume.
type allState struct {
	parts  []LocalState
	limits []int
}

func (s *allState) Decide(now int64, n int, consume bool) Result {
	if len(s.parts) == 0 {
		return Result{}
	}
	rs := make([]Result, len(s.parts))
	ok := true
	for i, p := range s.parts {
		rs[i] = p.Decide(now, n, false)
		ok = ok && rs[i].Allowed
	}
	if ok && consume {
		for i, p := range s.parts {
			rs[i] = p.Decide(now, n, true)
		}
	}
	for i := range rs {
		rs[i].Limit = s.limits[i]
	}
	return merge(rs)
}

// adjust implements adjuster: every part, or none when one part cannot.
func (s *allState) adjust(now, n int64) bool {
	for _, p := range s.parts {
		if _, ok := p.(adjuster); !ok {
			return false
		}
	}
	for _, p := range s.parts {
		p.(adjuster).adjust(now, n)
	}
	return true
}

// carry implements carrier: part by part, by position, as the parts'
// keys are named; a part of another kind starts afresh.
func (s *allState) carry(from LocalState, now int64) {
	f, ok := from.(*allState)
	if !ok {
		return
	}
	for i, p := range s.parts {
		if c, ok := p.(carrier); ok && i < len(f.parts) {
			c.carry(f.parts[i], now)
		}
	}
}

func (s *allState) ExpiresAt() int64 {
	var at int64
	for _, p := range s.parts {
		at = max(at, p.ExpiresAt())
	}
	return at
}

// merge returns the Result of All from its parts' results, which it keeps
// as Parts.
func merge(parts []Result) Result {
	r := parts[0]
	r.Parts = parts
	for _, p := range parts[1:] {
		r.Allowed = r.Allowed && p.Allowed
		r.Limit = min(r.Limit, p.Limit)
		r.Remaining = min(r.Remaining, p.Remaining)
		r.RetryAfter = max(r.RetryAfter, p.RetryAfter)
		r.ResetAfter = max(r.ResetAfter, p.ResetAfter)
	}
	if r.Allowed {
		r.RetryAfter = 0
	}
	return r
}

// TTLMargin is how long past the moment its state stops mattering a key
// lives: the TTL that every script sets is that long more, because Redis
// can count a TTL set in a script from the script's start, in whole ms,
// which without a margin could end a short window's key while it still
// counts. Bodies read it as ttl_margin, in ms (see [Algorithm.Body]).
const TTLMargin = time.Second
