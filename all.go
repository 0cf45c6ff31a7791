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
	// that defines a local function decide, as the package documentation
	// states. A Limiter assembles the script it runs from it; Script may
	// then return nil.
	Body() string
}

// maxParts is the most algorithms one [All] may combine.
const maxParts = 8

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
// not, a nil part, or more than 8 parts, with an error wrapping
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
	argc := make([]int, len(a.parts))
	for i, p := range a.parts {
		name := p.Name()
		c, ok := p.(Composable)
		switch {
		case !ok || c.Body() == "":
			a.err = fmt.Errorf("%w: all: part %d (%s) has no Lua body (does not implement Composable)", ErrInvalidConfig, i, name)
		case name == "" || strings.ContainsAny(name, "{}"):
			a.err = fmt.Errorf("%w: all: part %d: algorithm name %q must be non-empty, without '{' or '}'", ErrInvalidConfig, i, name)
		case p.Limit() < 1:
			a.err = fmt.Errorf("%w: all: part %d (%s) has capacity %d, want at least 1", ErrInvalidConfig, i, name, p.Limit())
		}
		if a.err != nil {
			return a
		}
		pa, err := p.Args()
		if err != nil {
			a.err = fmt.Errorf("all: part %d: %w", i, err)
			return a
		}
		bodies[i], argc[i] = c.Body(), len(pa)
		a.args = append(a.args, pa...)
	}
	a.script = redis.NewScript(assemble(bodies, argc))
	return a
}

// allOf is the Algorithm that All returns.
type allOf struct {
	parts  []Algorithm
	args   []any // the parts' arguments, one after another
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

// Args returns the parts' arguments, one after another: the script's
// ARGV[4] onwards. All reads them once, when it is called.
func (a allOf) Args() ([]any, error) { return a.args, a.err }

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
// the mode, and sets the TTL margin for the bodies.
var prelude = `local now = ARGV[1]
if now == '' then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
else
  now = tonumber(now)
end
local n = ARGV[2] + 0
local consume = ARGV[3] == '1'
-- ttl_margin is how many ms past the moment its state stops mattering a
-- key must live: Redis can count a relative TTL set in a script from the
-- script's start, in whole ms, so a key would otherwise expire while its
-- state still counts.
local ttl_margin = ` + strconv.FormatInt(ttlMargin.Milliseconds(), 10) + `
`

// ttlMargin is how long past the moment its state stops mattering a key
// lives: the TTL that every script sets is that long more.
const ttlMargin = time.Second

// maxState is the most values a body's decide may return after write.
const maxState = 10

// assemble returns the source of the script that runs bodies, one per
// part, where argc[i] is how many arguments body i takes, replying with
// four integers per part, in order: for one algorithm, the four of the
// script contract. The arguments of the parts
// follow each other from ARGV[4]. Each distinct body is defined once, in
// a block of its own, and the parts run as plain calls to decide and
// write: a decision makes no closure but the bodies' own functions.
func assemble(bodies []string, argc []int) string {
	var b strings.Builder
	b.WriteString(prelude)
	index := map[string]int{}
	order := make([]int, len(bodies))
	for p, body := range bodies {
		i, ok := index[body]
		if !ok {
			i = len(index) + 1
			index[body] = i
			fmt.Fprintf(&b, "local decide%d\ndo\n%s\ndecide%d = decide\nend\n", i, body, i)
		}
		order[p] = i
	}
	at := 4
	var allowed, reply []string
	for p := range bodies {
		k := p + 1
		state := make([]string, maxState)
		for i := range state {
			state[i] = fmt.Sprintf("s%d_%d", k, i+1)
		}
		args := make([]string, argc[p])
		for i := range args {
			args[i] = fmt.Sprintf("ARGV[%d]", at+i)
		}
		at += argc[p]
		fmt.Fprintf(&b, "local a%d, w%d, %s = decide%d(%s)\n", k, k, strings.Join(state, ", "), order[p],
			strings.Join(append([]string{fmt.Sprintf("KEYS[%d]", k), "now", "n"}, args...), ", "))
		allowed = append(allowed, fmt.Sprintf("a%d", k))
		reply = append(reply, fmt.Sprintf("a%d and 1 or 0, r%d, t%d, e%d", k, k, k, k))
	}
	fmt.Fprintf(&b, "local ok = %s and consume\n", strings.Join(allowed, " and "))
	for p := range bodies {
		k := p + 1
		state := make([]string, maxState)
		for i := range state {
			state[i] = fmt.Sprintf("s%d_%d", k, i+1)
		}
		fmt.Fprintf(&b, "local r%d, t%d, e%d = w%d(ok, KEYS[%d], now, n, %s)\n", k, k, k, k, k, strings.Join(state, ", "))
	}
	fmt.Fprintf(&b, "return {%s}\n", strings.Join(reply, ", "))
	return b.String()
}
