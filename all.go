package redislimit

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Composable is an [Algorithm] whose decision is a Lua body, so that it can
// take part in [All] as well as run alone. The package's own algorithms
// implement it. The package documentation ("Writing an algorithm") states
// the body's contract.
type Composable interface {
	Algorithm
	// Body returns the Lua source of the algorithm's decision: a chunk
	// that returns its decide function. A Limiter assembles the script it
	// runs from it; Script may then return nil.
	Body() string
}

// maxParts is the most algorithms one [All] may combine.
const maxParts = 16

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
// Each part keeps its own Redis key, named
//
//	prefix + "all:" + i + ":" + name + ":{" + K + "}"
//
// for the part at index i (from 0) with the algorithm name name, so two
// parts never share state, whatever their kinds, and every part of user
// key K sits in K's Cluster slot. (A K that begins with '}' would give
// the keys no hash tag, and so different slots: its keys are instead
// prefix + "all:" + i + ":" + name + ":#{" + H + "}" + K, where H is the
// first 32 hex digits of K's SHA-256, unless [WithHashedKeys] already
// hashes K.) An All nested in algs is flattened into
// its parts.
//
// Every part must implement [Composable]; [New] refuses a part that does
// not, a nil part, or more than 16 parts, with an error wrapping
// [ErrInvalidConfig], and All of no algorithms likewise. With [NewLocal]
// or [FailLocal], every part must implement [LocalAlgorithm], and the
// parts decide in process memory as they would in Redis.
func All(algs ...Algorithm) Algorithm {
	a := allOf{}
	for i, p := range algs {
		switch {
		case isNil(p):
			a.err = fmt.Errorf("%w: all: part %d: %w", ErrInvalidConfig, i, ErrNilAlgorithm)
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
		a.err = fmt.Errorf("%w: all: no algorithms", ErrInvalidConfig)
	case len(a.parts) > maxParts:
		a.err = fmt.Errorf("%w: all: %d parts, want at most %d", ErrInvalidConfig, len(a.parts), maxParts)
	}
	if a.err != nil {
		return a
	}
	bodies := make([]string, len(a.parts))
	for i, p := range a.parts {
		c, ok := p.(Composable)
		if !ok || c.Body() == "" {
			a.err = fmt.Errorf("%w: all: part %d (%s) has no Lua body (does not implement Composable)", ErrInvalidConfig, i, p.Name())
			return a
		}
		bodies[i] = c.Body()
	}
	a.script = redis.NewScript(assemble(bodies, true))
	return a
}

// allOf is the Algorithm that All returns.
type allOf struct {
	parts  []Algorithm
	script *redis.Script
	err    error // why the parts cannot be combined
}

func (allOf) Name() string { return "all" }

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

func (a allOf) Script() *redis.Script { return a.script }

// Args returns, for each part, how many arguments it has and then the
// arguments: the script's ARGV[4] onwards.
func (a allOf) Args() ([]any, error) {
	if a.err != nil {
		return nil, a.err
	}
	var args []any
	for i, p := range a.parts {
		name := p.Name()
		if name == "" || strings.ContainsAny(name, "{}") {
			return nil, fmt.Errorf("%w: all: part %d: algorithm name %q must be non-empty, without '{' or '}'", ErrInvalidConfig, i, name)
		}
		if p.Limit() < 1 {
			return nil, fmt.Errorf("%w: all: part %d (%s) has capacity %d, want at least 1", ErrInvalidConfig, i, name, p.Limit())
		}
		pa, err := p.Args()
		if err != nil {
			return nil, fmt.Errorf("all: part %d: %w", i, err)
		}
		args = append(append(args, len(pa)), pa...)
	}
	return args, nil
}

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
			return fmt.Errorf("%w: all: part %d (%s) cannot run in process memory (no NewLocalState method)", ErrInvalidConfig, i, p.Name())
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

// prelude opens every assembled script: it reads the time, the cost and
// the mode, and defines ttl for the bodies.
const prelude = `local now = ARGV[1]
if now == '' then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
else
  now = tonumber(now)
end
local n = ARGV[2] + 0
local consume = ARGV[3] == '1'
-- ttl returns the TTL, in ms (a string), of state that matters for us
-- more µs: rounded up, plus a margin, so that a key never expires while its
-- state still counts (Redis can count a relative TTL set in a script from
-- the script's start, in whole ms).
local function ttl(us)
  return string.format('%d', math.ceil(us / 1000) + ` + ttlMarginMillis + `)
end
`

// ttlMargin is how long past the moment its state stops mattering a key
// lives: the TTL that every script sets is that long more.
const (
	ttlMargin       = time.Second
	ttlMarginMillis = "1000"
)

// assemble returns the source of the script that runs bodies, one per
// part: for one algorithm (all unset, one body), replying with its four
// integers, its arguments from ARGV[4]; for All, replying with four per
// part, in order, each part's arguments preceded by their count.
func assemble(bodies []string, all bool) string {
	var b strings.Builder
	b.WriteString(prelude)
	index := map[string]int{} // each distinct body is defined once
	var order []int
	for _, body := range bodies {
		i, ok := index[body]
		if !ok {
			i = len(index) + 1
			index[body] = i
			fmt.Fprintf(&b, "local decide%d = (function()\n%s\nend)()\n", i, body)
		}
		order = append(order, i)
	}
	if !all {
		b.WriteString(`local allowed, finish = decide1(KEYS[1], now, n, unpack(ARGV, 4))
local remaining, retry, reset = finish(allowed and consume)
return {allowed and 1 or 0, remaining, retry, reset}
`)
		return b.String()
	}
	b.WriteString("local decide = {")
	for i, d := range order {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "decide%d", d)
	}
	fmt.Fprintf(&b, `}
local ok, allowed, finish, at = true, {}, {}, 4
for p = 1, %d do
  local c = ARGV[at] + 0
  allowed[p], finish[p] = decide[p](KEYS[p], now, n, unpack(ARGV, at + 1, at + c))
  ok = ok and allowed[p]
  at = at + c + 1
end
local reply = {}
for p = 1, %d do
  local remaining, retry, reset = finish[p](ok and consume)
  reply[4 * p - 3], reply[4 * p - 2], reply[4 * p - 1], reply[4 * p] = allowed[p] and 1 or 0, remaining, retry, reset
end
return reply
`, len(bodies), len(bodies))
	return b.String()
}
