package redislimit

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// Result is the outcome of one decision. The zero value is a denial with no
// capacity and nothing to wait for, and is returned alongside errors. A
// Result is not comparable with ==, as it holds [Result.Parts].
type Result struct {
	// Allowed reports whether the call was admitted (for [Limiter.Peek]:
	// whether a call of cost 1 would be).
	Allowed bool
	// Limit is the capacity in units: a window's limit or a bucket's burst;
	// for [All], the smallest part's.
	Limit int
	// Remaining is how many more calls of cost 1 would be allowed right now.
	// For a call admitted from a lease ([WithLeases]), it is what Redis
	// had left when the lease was taken plus the lease's units still
	// unused.
	Remaining int
	// RetryAfter is 0 when Allowed; otherwise how long until the same call
	// (same cost) can succeed, if nothing else consumes in between.
	RetryAfter time.Duration
	// ResetAfter is how long until the key is back to full capacity; 0 when
	// it is full.
	ResetAfter time.Duration
	// Degraded reports that the decision was made without Redis, by the
	// limiter's [FailurePolicy], after Redis failed; the error went to
	// [WithOnError]. It is false for every decision Redis made, and for
	// those of a limiter made with [NewLocal].
	Degraded bool
	// Shadowed reports that the limit denied the call and that shadow
	// mode ([WithShadowMode]) admitted it: Allowed is then true, nothing
	// was consumed, and the other fields tell what the denial said
	// (RetryAfter included, which is otherwise 0 when Allowed).
	Shadowed bool
	// Parts holds, for a limiter on [All], one Result per part, in the
	// order of All's arguments; nil for any other limiter. A part's
	// Allowed reports whether that part admits the call, and its other
	// fields are what it keeps after the decision: when another part
	// denied the call, nothing was consumed from any.
	Parts []Result
}

// Algorithm is a rate-limiting algorithm: a Lua body that decides, and
// the arguments it takes. [FixedWindow], [SlidingLog], [SlidingWindow],
// [TokenBucket], [CalendarQuota] and [All] return the package's own; implement it in any
// package to add another. The [Limiter] assembles the script it runs from
// the body and gives the algorithm everything else: key handling,
// validation, the time source, reply checking, batching, failure
// policies, the deny cache, and a part in [All]. The contract the body
// follows is on [Algorithm.Body].
//
// An algorithm may also have a method Window() time.Duration, the time
// its limit spans, which [Limiter.Quotas] reports as [Quota.Window]
// (without it, 0); and to decide in process memory too ([NewLocal],
// [FailLocal]) it implements [LocalAlgorithm].
//
// [New] (and [All], for its parts) calls the methods when it is called;
// their results must not change later.
type Algorithm interface {
	// Name returns a short identifier, used in the Redis key so that
	// algorithms on the same user key never share state, and in errors
	// about an algorithm defined outside the package.
	// It must be non-empty, hold neither '{' nor '}', and not be "cc",
	// which [Concurrency] keys use.
	Name() string
	// Limit returns the capacity, in units: the most that one key can be
	// granted at once. [Limiter.AllowN] refuses a larger cost with
	// [ErrCostExceedsLimit] without calling Redis.
	Limit() int
	// Args returns the body's own arguments, which decide receives after
	// key, now and n, as strings; their number is the length of the
	// slice. It returns an error wrapping [ErrInvalidConfig] when the
	// parameters are out of range.
	Args() ([]any, error)
	// Body returns the Lua source of the algorithm's decision: a chunk
	// that defines two local functions, decide and write.
	//
	//	local function write(consume, key, now, n, ...)
	//	  -- consume: true to consume n: when decide allowed the call
	//	  -- (within All, when every part allowed it), and for
	//	  -- Limiter.Debit and Limiter.Refund whatever decide said;
	//	  -- otherwise write only repairs (state the clock left in the
	//	  -- future, a missing TTL). ...: the values decide returned
	//	  -- after write. Give every write a TTL, in ms:
	//	  -- math.ceil(us / 1000) + ttl_margin for state that matters
	//	  -- for us more µs.
	//	  return remaining, retry_after_us, reset_after_us
	//	end
	//
	//	local function decide(key, now, n, ...)
	//	  -- key: the Redis key; now: µs since the Unix epoch (a
	//	  -- number); n: the cost, from 1 to Limit() (in All, to the
	//	  -- smallest part's Limit; for Debit and Refund, see below);
	//	  -- ...: the values Args returned, as
	//	  -- strings. Read key's state and decide; write nothing.
	//	  local allowed = ... -- a boolean, never 0 or 1
	//	  return allowed, write, ... -- and up to 10 values for write
	//	end
	//
	// For [Limiter.Debit] decide gets the debited n, which may exceed
	// Limit() (up to [MaxDebit]), and write consumes it even when decide
	// denied: usage past the limit is a debt, kept below a bound that
	// overflows nothing. For [Limiter.Refund] write gets n negated:
	// give back -n units, never beyond empty usage. Both then decide
	// again with n = 1 and write without consuming, for the reply.
	//
	// The three numbers write returns are integers, none negative:
	// retry_after 0 exactly when allowed, durations at most [MaxWindow],
	// and remaining and the durations what the key holds after the
	// write. The body touches no key but key and defines no global.
	// The script reads the time once (Redis TIME, or the [WithClock]
	// time) and passes it to every body, so the parts of an All decide
	// at one instant. Lua numbers are doubles: keep times in integer µs,
	// and format large numbers with string.format('%d', x), never with
	// tostring or '..', which keep 14 digits. Example (CustomAlgorithm)
	// writes a daily quota this way.
	Body() string
}

// Composable is [Algorithm]: every algorithm is a Lua body and can take
// part in [All].
type Composable = Algorithm

// windowed is an algorithm that says how long its limit spans.
type windowed interface{ Window() time.Duration }

// titled is an algorithm of the package's, which errors name by its
// constructor ("TokenBucket") rather than by the algorithm's Name.
type titled interface{ title() string }

// titleOf returns the name errors give alg: its constructor's for the
// package's own, else its Name.
func titleOf(alg Algorithm) string {
	if t, ok := alg.(titled); ok {
		return t.title()
	}
	return alg.Name()
}

// parseReply turns a script's reply into a Result, checking it against the
// script contract: {allowed 1|0, remaining, retry_after µs, reset_after µs},
// integers, none negative.
func parseReply(reply any) (Result, error) {
	a, ok := reply.([]any)
	if !ok {
		return Result{}, fmt.Errorf("%w: got %T, want an array", ErrMalformedReply, reply)
	}
	if len(a) != 4 {
		return Result{}, fmt.Errorf("%w: got %d elements, want 4", ErrMalformedReply, len(a))
	}
	return parseQuad(a, 0)
}

// parseParts turns the reply of All's script, four integers per part, into
// the Result of each of limits' parts, merged.
func parseParts(reply any, limits []int) (Result, error) {
	a, ok := reply.([]any)
	if !ok {
		return Result{}, fmt.Errorf("%w: got %T, want an array", ErrMalformedReply, reply)
	}
	if len(a) != 4*len(limits) {
		return Result{}, fmt.Errorf("%w: got %d elements, want %d", ErrMalformedReply, len(a), 4*len(limits))
	}
	parts := make([]Result, len(limits))
	for i := range parts {
		r, err := parseQuad(a[4*i:4*i+4], i)
		if err != nil {
			return Result{}, err
		}
		r.Limit = limits[i]
		parts[i] = r
	}
	return merge(parts), nil
}

// parseQuad parses one algorithm's four integers, the elements from 4*part
// of a reply.
func parseQuad(a []any, part int) (Result, error) {
	var v [4]int64
	for i, x := range a {
		n, ok := x.(int64)
		if !ok {
			return Result{}, fmt.Errorf("%w: element %d is %T, want an integer", ErrMalformedReply, 4*part+i, x)
		}
		if n < 0 {
			return Result{}, fmt.Errorf("%w: element %d is negative", ErrMalformedReply, 4*part+i)
		}
		v[i] = n
	}
	const maxMicros = int64(MaxWindow / time.Microsecond)
	switch {
	case v[0] > 1:
		return Result{}, fmt.Errorf("%w: allowed is %d, want 0 or 1", ErrMalformedReply, v[0])
	case v[1] > int64(^uint(0)>>1):
		return Result{}, fmt.Errorf("%w: remaining overflows int", ErrMalformedReply)
	case v[2] > maxMicros || v[3] > maxMicros:
		return Result{}, fmt.Errorf("%w: duration over MaxWindow", ErrMalformedReply)
	case v[0] == 1 && v[2] != 0:
		return Result{}, fmt.Errorf("%w: allowed with a retry_after", ErrMalformedReply)
	case v[0] == 0 && v[2] == 0:
		return Result{}, fmt.Errorf("%w: denied with no retry_after", ErrMalformedReply)
	}
	return Result{
		Allowed:    v[0] == 1,
		Remaining:  int(v[1]),
		RetryAfter: time.Duration(v[2]) * time.Microsecond,
		ResetAfter: time.Duration(v[3]) * time.Microsecond,
	}, nil
}

// Quota is one limit that a [Limiter] enforces: a capacity of Limit units
// over Window (a token bucket admits its burst and what refills meanwhile).
// For HTTP rate-limit headers and metrics.
type Quota struct {
	// Limit is the capacity, in units, as in [Result.Limit].
	Limit int
	// Window is the time the limit spans: the window of [FixedWindow],
	// [SlidingLog] and [SlidingWindow]; for [TokenBucket], the time an
	// empty bucket takes to fill (burst × per / rate, rounded up to a
	// whole µs); for [CalendarQuota], the length of the current period
	// on the limiter's clock (a day of 23 to 25 hours, a month of 28 to
	// 31 days); for an algorithm defined elsewhere, what its
	// Window method returns, or 0 without one.
	Window time.Duration
}

// quotasOf returns the quotas of alg at now: one per part of an All.
func quotasOf(alg Algorithm, now time.Time) []Quota {
	parts := []Algorithm{alg}
	if a, ok := alg.(allOf); ok {
		parts = a.parts
	}
	q := make([]Quota, len(parts))
	for i, p := range parts {
		q[i].Limit = p.Limit()
		if w, ok := p.(interface{ windowAt(time.Time) time.Duration }); ok {
			q[i].Window = w.windowAt(now) // a calendar period's length varies
		} else if w, ok := p.(windowed); ok {
			q[i].Window = max(w.Window(), 0)
		}
	}
	return q
}

// periodic is an algorithm whose arguments depend on the time (those of
// [CalendarQuota], and an [All] with such a part). The Limiter keeps the
// arguments of its clock's current span and asks for them again only when
// its clock leaves that span.
type periodic interface {
	// argsAt appends to dst the arguments for a client whose clock reads
	// now (µs since the Unix epoch), and returns them with the span
	// [from, until) of client times for which they are the same.
	argsAt(dst []any, now int64) (args []any, from, until int64)
	// identity tells the parameters apart whatever the time: equal
	// strings for equal parameters, for [Limiter.Using].
	identity() string
}

// periodicOf returns alg as a periodic algorithm, or nil when its
// arguments do not depend on the time.
func periodicOf(alg Algorithm) periodic {
	if a, ok := alg.(allOf); ok && !a.periodic {
		return nil
	}
	p, _ := alg.(periodic)
	return p
}

// periodArgs is the arguments of a periodic algorithm for the client
// times [from, until). It does not change once made.
type periodArgs struct {
	args        []any
	from, until int64
}

// periodCache holds a periodic algorithm's arguments for the span its
// Limiter's clock is in. Its methods are safe for concurrent use; at
// allocates only when the clock has left the span.
type periodCache struct {
	alg periodic
	cur atomic.Pointer[periodArgs]
}

// at returns the arguments for the client time now (µs).
func (c *periodCache) at(now int64) []any {
	if p := c.cur.Load(); p != nil && p.from <= now && now < p.until {
		return p.args
	}
	args, from, until := c.alg.argsAt(nil, now)
	c.cur.Store(&periodArgs{args: args, from: from, until: until})
	return args
}

// argsAppender is an algorithm of the package's, whose Args is
// appendArgs(nil): [Limiter.Using] gives it room for its arguments in the
// Limiter it allocates anyway.
type argsAppender interface {
	appendArgs(dst []any) ([]any, error)
}

// checkAlgorithm checks alg's name, capacity, body and arguments, and
// returns the arguments, appended to dst when alg is an argsAppender;
// errors wrap [ErrInvalidConfig] and name alg as its constructor does.
func checkAlgorithm(alg Algorithm, dst []any) ([]any, error) {
	if isNil(alg) {
		return nil, ErrNilAlgorithm
	}
	var args []any
	var err error
	if a, ok := alg.(argsAppender); ok {
		args, err = a.appendArgs(dst)
	} else {
		args, err = alg.Args()
	}
	if err != nil {
		return nil, err
	}
	name, title := alg.Name(), titleOf(alg)
	switch {
	case name == "" || strings.ContainsAny(name, "{}"):
		return nil, fmt.Errorf("%w: algorithm name %q must be non-empty, without '{' or '}'", ErrInvalidConfig, name)
	case name == concurrencyName:
		return nil, fmt.Errorf("%w: algorithm name %q is taken by Concurrency's keys", ErrInvalidConfig, name)
	case alg.Limit() < 1:
		return nil, fmt.Errorf("%w: %s has capacity %d, want at least 1", ErrInvalidConfig, title, alg.Limit())
	case alg.Body() == "":
		if _, ok := alg.(allOf); !ok {
			return nil, fmt.Errorf("%w: %s has no Lua body", ErrInvalidConfig, title)
		}
	}
	return args, nil
}

// maxUnits bounds limits, rates and bursts so that counts stay exact in
// Lua's double-precision numbers.
const maxUnits = 1 << 50

func checkUnits(alg, what string, v, max int) error {
	if v < 1 || v > max {
		return fmt.Errorf("%w: %s: %s is %d, want 1 to %d", ErrInvalidConfig, alg, what, v, max)
	}
	return nil
}

func checkSpan(alg, what string, d time.Duration) error {
	if d < time.Millisecond || d > MaxWindow {
		return fmt.Errorf("%w: %s: %s is %v, want 1ms to %v", ErrInvalidConfig, alg, what, d, MaxWindow)
	}
	return nil
}
