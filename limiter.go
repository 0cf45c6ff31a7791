package redislimit

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"hash/maphash"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/redis/go-redis/v9"
	"github.com/redislimit/redislimit/internal/luascript"
)

// Errors returned for bad input. Each is returned before anything is sent
// to Redis, so a call that returns one has written nothing. Match them with
// [errors.Is]; messages never contain the user's key.
var (
	// ErrNilClient is returned by [New] and [NewCache] when the client is
	// nil.
	ErrNilClient = errors.New("redislimit: nil client")
	// ErrNilAlgorithm is returned by [New] when the algorithm is nil.
	ErrNilAlgorithm = errors.New("redislimit: nil algorithm")
	// ErrInvalidConfig is returned by [New], wrapped with a description,
	// when an algorithm's parameters or an [Option] are out of range: a
	// limit, rate or burst below 1, a window or period under a millisecond
	// or over [MaxWindow], and the like. It is the module's one sentinel
	// for configuration errors, returned at construction: [NewCache] and
	// package httplimit wrap it too. A Limiter that New did not build (the
	// zero Limiter) returns it from every method that decides or resets,
	// for any valid key.
	ErrInvalidConfig = errors.New("redislimit: invalid configuration")
	// ErrEmptyKey is returned when the key is "".
	ErrEmptyKey = errors.New("redislimit: empty key")
	// ErrKeyTooLong is returned when the key is longer than [MaxKeyLen] bytes.
	ErrKeyTooLong = errors.New("redislimit: key too long")
	// ErrInvalidCost is returned by [Limiter.AllowN], wrapped with the
	// cost, when n < 1.
	ErrInvalidCost = errors.New("redislimit: cost must be at least 1")
	// ErrCostExceedsLimit is returned by [Limiter.AllowN], wrapped with the
	// cost and the limit, when n is above the algorithm's capacity
	// ([Result.Limit]), so that the call could never be allowed.
	ErrCostExceedsLimit = errors.New("redislimit: cost exceeds the limit")
)

const (
	// MaxKeyLen is the longest key, in bytes, that a [Limiter] or a [Cache]
	// accepts.
	// Any byte string from 1 to MaxKeyLen bytes is a valid key.
	MaxKeyLen = 8 << 10
	// MaxWindow is the longest window, period or refill span accepted, so
	// that times in µs stay exact in Lua's double-precision numbers.
	MaxWindow = 10 * 365 * 24 * time.Hour
	// DefaultPrefix is the prefix of every Redis key a [Limiter] writes,
	// unless [WithPrefix] sets another.
	DefaultPrefix = "rl:"
)

// A Limiter decides, per key, whether calls are within the limits of its
// [Algorithm], with state kept in Redis so that every process sharing the
// Redis shares the limit. Each decision is one atomic script call: one round
// trip in steady state.
//
// A Limiter is safe for concurrent use by multiple goroutines.
type Limiter struct {
	client    redis.Scripter // nil for NewLocal
	prog      *program
	progKey   progKey // what prog was assembled from
	name      string  // the algorithm's Name, in keys
	title     string  // the algorithm as errors name it
	optErr    error   // an option's own complaint
	limit     int     // the largest cost: the capacity, or localLimit for NewLocal
	args      []any   // ARGV[4:], fixed at New
	prefix    string
	keyPrefix string           // prefix + name + ":{"
	partKeys  []string         // for All: each part's prefix + "all:" + i + ":" + name + ":{"
	parts     []int            // for All: each part's capacity; nil otherwise
	hashes    *sync.Pool       // of HMAC hash.Hash, for WithHashedKeys; nil: keys as they are
	now       func() time.Time // nil: Redis TIME (the local clock is then time.Now)

	policy    FailurePolicy
	instances int
	onError   func(context.Context, error)
	timeout   time.Duration
	maxBatch  int
	sender    *sender // nil for NewLocal
	denyKeys  int     // WithDenyCache's bound; 0: no deny cache
	shadow    bool    // WithShadowMode

	leaseUnits int64         // WithLeases's maxUnits; 0: no leases
	leaseAge   time.Duration // WithLeases's maxAge
	leases     *leases       // the leases held, when leaseUnits > 0 on a Redis limiter
	denials    *denials

	turns   *turns   // of Wait's callers, by key
	observe Observer // nil: none
	alg     Algorithm

	// periods holds the ARGV[4:] of an algorithm whose arguments depend
	// on the time ([CalendarQuota]), for the current span of the clock;
	// nil for any other, which sends args.
	periods *periodCache

	local       *localStore    // NewLocal, or the FailLocal fallback: the store of this kind of algorithm
	localAlg    LocalAlgorithm // the algorithm, when local is set
	localLimit  int            // the local capacity
	localPeriod time.Duration  // how long an empty local key takes to be full

	// What [Limiter.Using] shares: the Limiters derived from this one's
	// options, and the identity of this one's parameters, which the deny
	// cache and the in-process store compare.
	fam    *family
	params any
}

//go:embed scripts/reset.lua
var resetLua string

// resetProgram deletes one limiter key. It is a script, not DEL, because a
// Limiter holds only a [redis.Scripter].
var resetProgram = newProgram(resetLua)

// New returns a Limiter that runs alg on client. Any [redis.Scripter] works:
// *redis.Client, *redis.ClusterClient, *redis.Ring, failover clients and
// [redis.UniversalClient]. It returns [ErrNilClient], [ErrNilAlgorithm], or an
// error wrapping [ErrInvalidConfig] when alg or an option is invalid. New
// does not contact Redis: the first decision loads the script.
//
// When Redis fails, decisions follow [WithFailurePolicy] (by default the
// error is returned), each within [WithTimeout] (by default
// [DefaultTimeout]); the package documentation ("When Redis fails") has
// the details.
func New(client redis.Scripter, alg Algorithm, opts ...Option) (*Limiter, error) {
	if isNil(client) {
		return nil, ErrNilClient
	}
	return build(client, alg, opts)
}

// build makes a Limiter on client, or an in-process one when client is nil.
func build(client redis.Scripter, alg Algorithm, opts []Option) (*Limiter, error) {
	args, err := checkAlgorithm(alg, nil)
	if err != nil {
		return nil, err
	}
	l, err := configure(client, opts)
	if err != nil {
		return nil, err
	}
	if err := l.bind(alg, args); err != nil {
		return nil, err
	}
	if client != nil {
		l.sender = newSender(client, l.timeout, l.maxBatch)
		if l.denyKeys > 0 {
			l.denials = newDenials(l.denyKeys)
		}
	}
	return l, nil
}

// configure returns a Limiter on client (nil: in process) with opts
// applied and checked, bound to no algorithm and with no sender yet.
func configure(client redis.Scripter, opts []Option) (*Limiter, error) {
	l := &Limiter{
		client:    client,
		prefix:    DefaultPrefix,
		instances: 1,
		timeout:   DefaultTimeout,
		maxBatch:  DefaultBatchSize,
		turns:     &turns{},
		fam:       newFamily(),
	}
	for _, o := range opts {
		if o != nil {
			o(l)
		}
	}
	switch {
	case l.optErr != nil:
		return nil, l.optErr
	case strings.ContainsAny(l.prefix, "{}"):
		return nil, fmt.Errorf("%w: prefix %q holds '{' or '}'", ErrInvalidConfig, l.prefix)
	case l.policy < FailError || l.policy > FailLocal:
		return nil, fmt.Errorf("%w: unknown failure policy %d", ErrInvalidConfig, int(l.policy))
	case l.instances < 1 || l.instances > maxUnits:
		return nil, fmt.Errorf("%w: %d local instances, want at least 1", ErrInvalidConfig, l.instances)
	case l.timeout <= 0:
		return nil, fmt.Errorf("%w: timeout %v, want more than 0", ErrInvalidConfig, l.timeout)
	case l.denyKeys < 0:
		return nil, fmt.Errorf("%w: deny cache of %d keys, want at least 1", ErrInvalidConfig, l.denyKeys)
	case l.maxBatch < 1:
		return nil, fmt.Errorf("%w: batch size %d, want at least 1", ErrInvalidConfig, l.maxBatch)
	}
	return l, nil
}

// bind makes l decide with alg, valid, whose arguments are args: every
// field that depends on the algorithm, and none that its options set.
func (l *Limiter) bind(alg Algorithm, args []any) error {
	name := alg.Name()
	if name != l.name || l.keyPrefix == "" {
		l.keyPrefix = l.prefix + name + ":{"
	}
	l.alg, l.name, l.title, l.limit, l.args = alg, name, titleOf(alg), alg.Limit(), args
	l.parts, l.partKeys = nil, nil
	l.periods = nil
	if p := periodicOf(alg); p != nil {
		l.periods = &periodCache{alg: p}
	}
	l.local, l.localAlg, l.localLimit, l.localPeriod = nil, nil, 0, 0
	all, isAll := alg.(allOf)
	if isAll {
		l.parts = all.limits()
		for _, name := range all.keyNames() {
			l.partKeys = append(l.partKeys, l.prefix+name+":{")
		}
	}
	if l.client == nil || l.policy == FailLocal {
		if isAll {
			if err := all.localParts(); err != nil {
				return err
			}
		}
		la, ok := alg.(LocalAlgorithm)
		if !ok {
			return fmt.Errorf("%w: %s cannot run in process memory (no NewLocalState method)", ErrInvalidConfig, l.title)
		}
		l.local, l.localAlg = l.fam.localStore(l.name), la
		l.localLimit = int(localUnits(l.limit, l.instances))
		l.localPeriod = la.NewLocalState(l.instances).Decide(0, l.localLimit, true).ResetAfter
		if l.localPeriod <= 0 {
			l.localPeriod = time.Second
		}
	}
	// A derived Limiter of the parent's body reuses its program: strings
	// compare in constant time when they share their bytes.
	if k := progKeyOf(alg, args); l.prog == nil || k != l.progKey {
		l.prog, l.progKey = l.fam.program(k), k
	}
	if l.client == nil {
		l.limit = l.localLimit
	}
	l.params = paramsOf(alg, l.prog, args)
	l.leases = nil
	if l.client != nil && l.leaseUnits > 0 {
		l.leases = newLeases(l)
		l.fam.addLeases(l.leases)
	}
	return nil
}

// paramsOf returns the identity of alg's parameters, whose arguments are
// args and whose program is prog: alg itself when it is a value that
// compares equal to itself, else what the script receives.
func paramsOf(alg Algorithm, prog *program, args []any) any {
	if comparableAlg(alg) {
		return alg
	}
	if p := periodicOf(alg); p != nil {
		// Its arguments change with the time; its parameters do not.
		return paramsID{prog: prog, name: alg.Name(), args: p.identity()}
	}
	return paramsID{prog: prog, name: alg.Name(), args: fmt.Sprint(args...)}
}

// paramsID identifies the parameters of an algorithm that cannot be
// compared: its program (body or script), Name and arguments.
type paramsID struct {
	prog *program
	name string
	args string
}

// Using returns a Limiter that decides with alg and shares everything
// else with l: the client, batching, circuit breaker, failure policy,
// timeout, deny cache, observer, clock, prefix and key layout, and every
// other option l was built with. It is for limits chosen per call, such
// as a tenant's plan: derive the plan's Limiter on each request.
//
// An algorithm of the same kind (the same Name) keeps a key's state in the
// same Redis key whatever its parameters, so a key's usage carries over
// when its limit changes; each algorithm's documentation says how its
// state reads under new parameters. An algorithm of another kind has keys
// of its own. The deny cache ([WithDenyCache]) reuses a denial only for
// the parameters that got it. In process ([NewLocal], [FailLocal]) the
// package's algorithms carry usage across parameters in the same way; a
// [LocalAlgorithm] defined elsewhere starts a key afresh when its
// parameters change.
//
// Using sends nothing to Redis (a new body's script loads on its first
// call, as with New) and is cheap enough for every request: it keeps the
// Limiters it built, up to a few thousand, and returns the same Limiter
// for an equal algorithm. An algorithm value of plain data (those of
// [FixedWindow], [SlidingLog], [SlidingWindow] and [TokenBucket]) is found
// by its value, without checking it again; any other (an [All], or a type
// holding pointers or slices) is checked and found by its arguments and
// script, which costs more; a [CalendarQuota], whose arguments change
// with the time, by its limit, period and zone. It returns the errors of [New]:
// [ErrNilAlgorithm], or one wrapping [ErrInvalidConfig] for invalid
// parameters or, on an in-process Limiter, an algorithm that cannot run
// in process memory; and errors.Is(err, ErrInvalidConfig) for a Limiter
// that New did not build.
func (l *Limiter) Using(alg Algorithm) (*Limiter, error) {
	if err := l.built(); err != nil {
		return nil, err
	}
	c := comparableAlg(alg)
	if c {
		if alg == l.alg {
			return l, nil
		}
		if d := l.fam.lookup(alg); d != nil {
			return d, nil
		}
	}
	dl := new(derived)
	args, err := checkAlgorithm(alg, dl.argv[:0])
	if err != nil {
		return nil, err
	}
	var id paramsID
	if !c {
		id = paramsOf(alg, l.fam.program(progKeyOf(alg, args)), args).(paramsID)
		if d := l.fam.lookupID(id); d != nil {
			return d, nil
		}
	}
	d := &dl.Limiter
	*d = *l
	d.turns = &dl.turns
	if err := d.bind(alg, args); err != nil {
		return nil, err
	}
	if c {
		l.fam.remember(d)
	} else {
		l.fam.rememberID(id, d)
	}
	return d, nil
}

// isNil reports whether v is nil or an interface holding a nil pointer
// (or other nil reference), whose methods would panic: a client such as
// (*redis.Client)(nil), or an algorithm of a pointer type.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	r := reflect.ValueOf(v)
	switch r.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Func, reflect.Slice, reflect.Chan:
		return r.IsNil()
	}
	return false
}

// Quotas returns the limits l enforces: one for an algorithm, one per
// part, in order, for [All]. For a limiter made with [NewLocal], the
// limits are the divided ones its decisions use. The slice is new on
// every call.
func (l *Limiter) Quotas() []Quota {
	if l.alg == nil {
		return nil
	}
	t := time.Now()
	if l.now != nil {
		t = l.now()
	}
	q := quotasOf(l.alg, t)
	if l.client == nil {
		for i := range q {
			q[i].Limit = int(localUnits(q[i].Limit, l.instances))
		}
	}
	return q
}

// Allow reports whether one call on key is allowed now, and consumes one
// unit if it is. It is AllowN(ctx, key, 1).
func (l *Limiter) Allow(ctx context.Context, key string) (Result, error) {
	o := l.decide(ctx, key, 1, true)
	return o.res, o.err
}

// AllowN reports whether a call of cost n on key is allowed now, and
// consumes n units if it is. It is all or nothing: a denied call consumes
// nothing. A denial is a Result with Allowed false, not an error; an error
// means the input was bad ([ErrEmptyKey], [ErrKeyTooLong], [ErrInvalidCost],
// [ErrCostExceedsLimit], with nothing sent to Redis), the context ended, or
// Redis failed.
func (l *Limiter) AllowN(ctx context.Context, key string, n int) (Result, error) {
	o := l.decide(ctx, key, n, true)
	return o.res, o.err
}

// Peek reports what Allow would return for key now, without consuming
// anything.
func (l *Limiter) Peek(ctx context.Context, key string) (Result, error) {
	o := l.decide(ctx, key, 1, false)
	return o.res, o.err
}

// MaxDebit is the largest n that [Limiter.Debit] and [Limiter.Refund]
// take: 2^50 units.
const MaxDebit = maxUnits

// Debit charges n units on key for work already done, whether or not the
// limit allows them: a call whose cost is known only after it ran (an LLM
// call charged by its tokens). Past the limit, the key owes the rest and
// denies until it has recovered: a token bucket refills the debt at its
// rate; a window's count stays above its limit until the window ends.
// The debt is bounded so that nothing overflows: a window's count (of
// [FixedWindow], [SlidingWindow], [CalendarQuota]) stops at its limit plus
// [MaxDebit]; a token bucket owes at most what it refills in
// [MaxWindow]; a [SlidingLog] records at most limit entries per Debit and
// keeps its 2×limit newest, which changes no decision (only the newest
// limit entries decide when the key recovers) but bounds what a later
// Refund can give back. On an [All] limiter, every part is charged.
//
// The Result is the key's state after the charge, as [Limiter.Peek]
// would return it. n must be from 1 to MaxDebit, or Debit returns an
// error wrapping [ErrInvalidCost] and sends nothing. The change is one
// script call, atomic across the parts of an All; it follows the failure
// policy ([FailOpen] and [FailClosed] answer as for a decision and the
// charge is lost; [FailLocal] charges the in-process state). Debit is not
// reported to the [Observer], which counts decisions, and drops the deny
// cache's answer for key. An algorithm defined outside the package takes
// part when its body follows the contract on [Algorithm.Body].
func (l *Limiter) Debit(ctx context.Context, key string, n int) (Result, error) {
	return l.adjust(ctx, key, n, luascript.Debit)
}

// Refund gives n units back to key: the unused part of an estimate that
// [Limiter.AllowN] reserved. The key never holds more than its capacity:
// a window's count stops at 0; a token bucket's at full; a [SlidingLog]
// removes its newest n entries, a [SlidingWindow] takes n from the
// current window's count, then from the previous one's. On an [All]
// limiter, every part is refunded.
//
// The Result, the errors, atomicity and the failure policy are as for
// [Limiter.Debit].
func (l *Limiter) Refund(ctx context.Context, key string, n int) (Result, error) {
	return l.adjust(ctx, key, n, luascript.Refund)
}

// adjust runs Debit (mode luascript.Debit) or Refund of n units on key.
func (l *Limiter) adjust(ctx context.Context, key string, n int, mode string) (Result, error) {
	if err := l.built(); err != nil {
		return Result{}, err
	}
	if err := checkKey(key); err != nil {
		return Result{}, err
	}
	if n < 1 || n > MaxDebit {
		return Result{}, l.wrap(fmt.Errorf("%w: %d units to %s, want 1 to %d", ErrInvalidCost, n, modeVerb(mode), MaxDebit))
	}
	if err := ctx.Err(); err != nil {
		return Result{}, l.wrap(err)
	}
	delta := int64(n)
	if mode == luascript.Refund {
		delta = -delta
	}
	if l.client == nil {
		return l.adjustLocal(key, delta, false)
	}
	if l.denials != nil {
		// As for Reset: a denial in flight must not outlive the change.
		l.denials.beginReset(key)
		defer l.denials.endReset()
	}
	reply, err := l.sender.call(ctx, l.prepareMode(key, n, mode, l.sendTime()))
	if err == nil {
		var r Result
		if r, err = l.parse(reply); err == nil {
			return r, nil
		}
	}
	ended, err := l.failed(ctx, err, true)
	if ended {
		return Result{}, err
	}
	switch l.policy {
	case FailOpen, FailClosed:
		return l.degraded(l.policy == FailOpen), nil
	case FailLocal:
		return l.adjustLocal(key, delta, true)
	}
	return Result{}, err
}

func modeVerb(mode string) string {
	if mode == luascript.Refund {
		return "refund"
	}
	return "debit"
}

// adjustLocal debits (delta > 0) or refunds key's in-process state, and
// returns the state after, as Peek would.
func (l *Limiter) adjustLocal(key string, delta int64, degraded bool) (Result, error) {
	t := time.Now()
	if l.now != nil {
		t = l.now()
	}
	r, ok := l.local.adjust(key, l.localAlg, l.params, l.instances, t.UnixMicro(), delta)
	if !ok {
		verb := "debit"
		if delta < 0 {
			verb = "refund"
		}
		return Result{}, l.wrap(fmt.Errorf("%w: %s cannot %s in process memory (its LocalState has no adjust method)", ErrInvalidConfig, l.title, verb))
	}
	r.Limit, r.Degraded = l.localLimit, degraded
	if degraded {
		for i := range r.Parts {
			r.Parts[i].Degraded = true
		}
	}
	return r, nil
}

// Reset deletes key's state, giving it full capacity again. Resetting a key
// with no state is not an error. With [WithLeases], the leases of key that
// the limiter and those derived from it with [Limiter.Using] hold end
// without giving their units back, since the state they came from is
// gone, and a lease request in flight is dropped; leases that other
// processes hold admit until they end, at most their maxAge later.
func (l *Limiter) Reset(ctx context.Context, key string) error {
	if err := l.built(); err != nil {
		return err
	}
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return l.wrap(err)
	}
	if l.local != nil {
		l.local.delete(key)
	}
	if l.leaseUnits > 0 { // an option, so the same for the whole family
		for _, ls := range l.fam.leaseSets() {
			ls.drop(key) // every Limiter derived from this one may share the key
		}
	}
	if l.denials != nil {
		l.denials.beginReset(key)
		defer l.denials.endReset()
	}
	if l.client == nil {
		return nil
	}
	if _, err := l.sender.call(ctx, l.request(resetProgram, key, 0)); err != nil {
		_, err = l.failed(ctx, err, true)
		return err
	}
	return nil
}

// outcome is how one decision ended.
type outcome struct {
	res Result
	err error
	// covered is the Redis error that the failure policy covered when it
	// made the decision (res is then Degraded); nil otherwise.
	covered error
	src     source
}

// decide makes one decision of cost n on key, consuming n units if it is
// allowed and consume is set, and reports it to the observer.
func (l *Limiter) decide(ctx context.Context, key string, n int, consume bool) (o outcome) {
	if l.observe != nil {
		start := time.Now()
		defer func() { l.observed(ctx, start, o.src, o.sent(), o.res, o.err) }()
	}
	o = l.decideOnce(ctx, key, n, consume)
	if l.shadow {
		o.res = shadow(o.res)
	}
	return o
}

// shadow returns r as shadow mode returns it: a denial admitted, and
// marked Shadowed.
func shadow(r Result) Result {
	if !r.Allowed {
		r.Allowed, r.Shadowed = true, true
	}
	return r
}

// decideOnce is decide without the observer and shadow mode.
func (l *Limiter) decideOnce(ctx context.Context, key string, n int, consume bool) outcome {
	if err := checkKey(key); err != nil {
		return outcome{err: err}
	}
	if n < 1 {
		return outcome{err: l.wrap(fmt.Errorf("%w: a cost of %d", ErrInvalidCost, n))}
	}
	if n > l.limit {
		return outcome{err: l.costError(n)}
	}
	if err := ctx.Err(); err != nil {
		return outcome{err: l.wrap(err)}
	}
	if l.client == nil {
		return outcome{res: l.decideLocal(key, n, consume, false), src: fromLocal}
	}
	var hot *hotKey
	if l.leases != nil && consume {
		var r Result
		var ok bool
		if r, hot, ok = l.leases.spend(key, n); ok {
			return outcome{res: r, src: fromLease}
		}
	}
	now, epoch := l.sendTime(), noRecord
	if l.denials != nil {
		if r, ok := l.denials.lookup(key, l.params, n, now); ok {
			r.Limit = l.limit
			return outcome{res: r, src: fromCache}
		}
		epoch = l.denials.stamp()
	}
	if hot != nil {
		if o, ok := l.leases.take(ctx, hot, n, sendStamp{now, epoch}); ok {
			return o
		}
	}
	reply, err := l.sender.call(ctx, l.prepare(key, n, consume, now))
	return l.finish(ctx, key, n, consume, sendStamp{now, epoch}, reply, err, true)
}

// prepare returns the request for one decision on key at now (µs, used
// with [WithClock]).
func (l *Limiter) prepare(key string, n int, consume bool, now int64) request {
	if consume {
		return l.prepareMode(key, n, luascript.Consume, now)
	}
	return l.prepareMode(key, n, luascript.Peek, now)
}

// prepareMode returns the request to run l's script on key at now in
// mode, one of luascript's modes: a constant, which an any holds without
// allocating.
func (l *Limiter) prepareMode(key string, n int, mode any, now int64) request {
	args := l.args
	if l.periods != nil {
		at := now
		if l.now == nil {
			at = time.Now().UnixMicro()
		}
		args = l.periods.at(at)
	}
	r := l.request(l.prog, key, 3+len(args))
	// Constant strings held in an any allocate nothing.
	var t any = ""
	if l.now != nil {
		t = now
	}
	r.line = append(append(r.line, t, n, mode), args...)
	return r
}

// request returns a request to run p on key's Redis keys, with room for
// argc arguments.
func (l *Limiter) request(p *program, key string, argc int) request {
	if l.parts == nil {
		return newRequest(p, l.redisKey(key), argc)
	}
	return newRequestKeys(p, l.redisKeys(key), argc)
}

// failed returns the error to report for a call that Redis failed, and
// whether the caller's context ended: then the context's error, without
// OnError; else err, wrapped, passed to OnError first when notify is set.
func (l *Limiter) failed(ctx context.Context, err error, notify bool) (ended bool, report error) {
	if cerr := callerDone(ctx); cerr != nil {
		return true, l.wrap(cerr)
	}
	err = l.wrap(err)
	if notify && l.onError != nil {
		l.onError(ctx, err)
	}
	return false, err
}

// sendStamp is when a decision was sent: the time of [Limiter.sendTime]
// and the deny cache's epoch.
type sendStamp struct {
	now   int64
	epoch uint64
}

// finish turns the reply to a decision of cost n on key, sent at at, into
// its outcome: the Result, which the deny cache learns, or, when Redis
// failed, the caller's context error, or what the failure policy decides,
// after passing the error to OnError when notify is set.
func (l *Limiter) finish(ctx context.Context, key string, n int, consume bool, at sendStamp, reply any, err error, notify bool) outcome {
	if err == nil {
		var r Result
		if r, err = l.parse(reply); err == nil {
			if l.denials != nil {
				l.denials.record(key, l.params, n, at.now, at.epoch, r)
			}
			return outcome{res: r, src: fromRedis}
		}
	}
	ended, err := l.failed(ctx, err, notify)
	if ended {
		return outcome{err: err, src: fromRedis}
	}
	switch l.policy {
	case FailOpen, FailClosed:
		return outcome{res: l.degraded(l.policy == FailOpen), covered: err, src: fromRedis}
	case FailLocal:
		return outcome{res: l.decideLocal(key, n, consume, true), covered: err, src: fromRedis}
	}
	return outcome{err: err, src: fromRedis}
}

// parse returns the Result of a script's reply.
func (l *Limiter) parse(reply any) (Result, error) {
	if l.parts != nil {
		return parseParts(reply, l.parts)
	}
	r, err := parseReply(reply)
	r.Limit = l.limit
	return r, err
}

// degraded returns the decision of FailOpen (open) or FailClosed: admitted
// with full capacity, or denied for the breaker's cooldown.
func (l *Limiter) degraded(open bool) Result {
	one := func(limit int) Result {
		if open {
			return Result{Allowed: true, Limit: limit, Remaining: limit, Degraded: true}
		}
		cooldown := l.sender.breaker.cooldown
		return Result{Limit: limit, RetryAfter: cooldown, ResetAfter: cooldown, Degraded: true}
	}
	if l.parts == nil {
		return one(l.limit)
	}
	parts := make([]Result, len(l.parts))
	for i, limit := range l.parts {
		parts[i] = one(limit)
	}
	r := merge(parts)
	r.Degraded = true
	return r
}

// AllowMany reports, for each key in keys, whether one call on it is
// allowed now, and consumes one unit of each key that allows it, as
// [Limiter.Allow] would for each in turn; a key given twice is decided
// twice. The results are in the order of keys. The calls go to Redis as
// one pipeline: one round trip per Redis node (the first use of a
// connection aside), against one per key for as many Allow calls. The
// deny cache ([WithDenyCache]) answers the keys it holds without Redis.
//
// A bad key ([ErrEmptyKey], [ErrKeyTooLong]) returns that error before
// anything is sent. When Redis fails, the failure policy decides each key
// as it would for Allow, and OnError is called once for a failure of the
// whole call (no node answered in time) and once for each key that failed
// alone; with [FailError] the first error is returned, with no results. The call
// takes at most the limiter's timeout ([WithTimeout]) in all. An empty
// keys returns no results and no error.
func (l *Limiter) AllowMany(ctx context.Context, keys []string) ([]Result, error) {
	if err := l.built(); err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return nil, err
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, l.wrap(err)
	}
	var start time.Time
	if l.observe != nil {
		start = time.Now()
	}
	res := make([]Result, len(keys))
	if l.client == nil {
		for i, k := range keys {
			res[i] = l.decideLocal(k, 1, true, false)
			if l.shadow {
				res[i] = shadow(res[i])
			}
			if l.observe != nil {
				l.observed(ctx, start, fromLocal, false, res[i], nil)
			}
		}
		return res, nil
	}
	now, epoch := l.sendTime(), noRecord
	if l.denials != nil {
		epoch = l.denials.stamp()
	}
	toRedis := make([]int, 0, len(keys)) // the indexes of the keys that go to Redis
	var leased []int                     // the indexes of the keys admitted from leases
	reqs := make([]request, 0, len(keys))
	for i, k := range keys {
		if l.leases != nil {
			if r, _, ok := l.leases.spend(k, 1); ok {
				res[i] = r
				leased = append(leased, i)
				continue
			}
		}
		if l.denials != nil {
			if r, ok := l.denials.lookup(k, l.params, 1, now); ok {
				r.Limit = l.limit
				res[i] = r
				if l.shadow {
					res[i] = shadow(r)
				}
				continue
			}
		}
		toRedis = append(toRedis, i)
		reqs = append(reqs, l.prepare(k, 1, true, now))
	}
	if len(reqs) == 0 {
		l.observedMany(ctx, start, res, toRedis, leased, nil, false)
		return res, nil
	}
	replies, errs, err := l.sender.callMany(ctx, reqs)
	sent := !errors.Is(err, ErrCircuitOpen)
	if err != nil && callerDone(ctx) == nil {
		// One failure for the whole call: report it once.
		if l.onError != nil {
			l.onError(ctx, l.wrap(err))
		}
	}
	for j, i := range toRedis {
		e, notify := err, false
		var reply any
		if e == nil {
			reply, e, notify = replies[j], errs[j], true
		}
		o := l.finish(ctx, keys[i], 1, true, sendStamp{now, epoch}, reply, e, notify)
		if o.err != nil {
			l.observedMany(ctx, start, nil, toRedis, leased, o.err, sent)
			return nil, o.err
		}
		res[i] = o.res
		if l.shadow {
			res[i] = shadow(o.res)
		}
	}
	l.observedMany(ctx, start, res, toRedis, leased, nil, sent)
	return res, nil
}

// observedMany reports the decisions of one AllowMany call: res, in which
// the keys at the indexes toRedis were meant for Redis (and went there
// when sent is set), those at leased were admitted from leases, and the
// others were answered by the deny cache; or, when err is set, a failure
// of each key meant for Redis.
func (l *Limiter) observedMany(ctx context.Context, start time.Time, res []Result, toRedis, leased []int, err error, sent bool) {
	if l.observe == nil {
		return
	}
	if err != nil {
		for range toRedis {
			l.observed(ctx, start, fromRedis, sent, Result{}, err)
		}
		return
	}
	j, k := 0, 0
	for i, r := range res {
		src := fromCache
		switch {
		case j < len(toRedis) && toRedis[j] == i:
			src, j = fromRedis, j+1
		case k < len(leased) && leased[k] == i:
			src, k = fromLease, k+1
		}
		l.observed(ctx, start, src, src == fromRedis && sent, r, nil)
	}
}

// decideLocal makes a decision in process memory. A cost above the local
// capacity (possible only as a fallback) is denied until a full period has
// passed.
func (l *Limiter) decideLocal(key string, n int, consume, degraded bool) Result {
	t := time.Now()
	if l.now != nil {
		t = l.now()
	}
	var r Result
	if n <= l.localLimit {
		r = l.local.decide(key, l.localAlg, l.params, l.instances, t.UnixMicro(), n, consume)
	} else {
		r = l.local.decide(key, l.localAlg, l.params, l.instances, t.UnixMicro(), 1, false)
		r.Allowed, r.RetryAfter = false, l.localPeriod
		for i, p := range r.Parts {
			if n > p.Limit {
				r.Parts[i].Allowed, r.Parts[i].RetryAfter = false, l.localPeriod
			}
		}
	}
	r.Limit, r.Degraded = l.localLimit, degraded
	if degraded {
		for i := range r.Parts {
			r.Parts[i].Degraded = true
		}
	}
	return r
}

// costError returns the error for a cost n above the limit, or for any
// cost on a Limiter that New did not build.
func (l *Limiter) costError(n int) error {
	if l.limit == 0 {
		return errNotBuilt
	}
	return l.wrap(fmt.Errorf("%w: a cost of %d against a limit of %d", ErrCostExceedsLimit, n, l.limit))
}

// errNotBuilt is returned by the methods of a Limiter that [New] or
// [NewLocal] did not build, such as the zero Limiter.
var errNotBuilt = fmt.Errorf("%w: a Limiter must be built with New or NewLocal", ErrInvalidConfig)

// built returns errNotBuilt for a Limiter that New did not build.
func (l *Limiter) built() error {
	if l.limit == 0 {
		return errNotBuilt
	}
	return nil
}

// wrap names the algorithm in err, which it wraps: "redislimit: FixedWindow: " and
// err's text, without repeating the package prefix that the package's own
// errors carry.
func (l *Limiter) wrap(err error) error {
	return &algError{name: l.title, err: err}
}

// algError is an error from one algorithm's limiter.
type algError struct {
	name string
	err  error
}

func (e *algError) Error() string {
	return "redislimit: " + e.name + ": " + strings.TrimPrefix(e.err.Error(), "redislimit: ")
}

func (e *algError) Unwrap() error { return e.err }

func checkKey(key string) error {
	switch {
	case key == "":
		return ErrEmptyKey
	case len(key) > MaxKeyLen:
		return ErrKeyTooLong
	}
	return nil
}

// derived is a Limiter that [Limiter.Using] allocates, with room for the
// arguments of the package's algorithms and its own Wait turns: waiters
// under other parameters, which may have other Redis keys, do not queue
// behind each other.
type derived struct {
	Limiter
	argv  [4]any
	turns turns
}

// family is what a Limiter built by [New] or [NewLocal] and every Limiter
// derived from it by [Limiter.Using] share beyond their options: the
// Limiters built for algorithm values, the programs by body, and one
// in-process store per kind of algorithm. Each cache is bounded; past its
// bound it starts again empty, which costs only rebuilding.
type family struct {
	seed    maphash.Seed
	derived atomic.Pointer[[derivedSlots]atomic.Pointer[Limiter]] // nil until the first Using

	mu     sync.Mutex
	byID   map[paramsID]*Limiter  // for algorithms that cannot be compared; guarded by mu
	progs  map[progKey]*program   // guarded by mu
	locals map[string]*localStore // by Name, one per kind of algorithm; guarded by mu
	leases []weak.Pointer[leases] // of every Limiter with leases; guarded by mu
}

// Bounds of a family's caches.
const (
	// derivedSlots is how many Limiters a family keeps for algorithm
	// values that compare: each goes to one of two slots chosen by its
	// hash, a newer one replacing an older.
	derivedSlots = 4096
	maxByID      = 1024 // Limiters kept for algorithms that cannot be compared
	maxPrograms  = 256  // assembled scripts
)

// progKey is what a program is assembled from: one body with argc
// arguments, or, with argc -1, the script of an [All].
type progKey struct {
	body string
	argc int
}

// progKeyOf returns the progKey of alg, whose arguments are args.
func progKeyOf(alg Algorithm, args []any) progKey {
	if a, ok := alg.(allOf); ok {
		return progKey{body: a.script(), argc: -1}
	}
	return progKey{body: alg.Body(), argc: len(args)}
}

func newFamily() *family {
	return &family{
		seed:   maphash.MakeSeed(),
		byID:   make(map[paramsID]*Limiter),
		progs:  make(map[progKey]*program),
		locals: make(map[string]*localStore),
	}
}

// slots returns the two slots of alg, which compares, in slots.
func (f *family) slots(slots *[derivedSlots]atomic.Pointer[Limiter], alg Algorithm) (*atomic.Pointer[Limiter], *atomic.Pointer[Limiter]) {
	i := maphash.Comparable(f.seed, alg) % derivedSlots
	return &slots[i], &slots[i^1]
}

// lookup returns the Limiter kept for alg, which compares, or nil.
func (f *family) lookup(alg Algorithm) *Limiter {
	slots := f.derived.Load()
	if slots == nil {
		return nil
	}
	a, b := f.slots(slots, alg)
	if d := a.Load(); d != nil && d.alg == alg {
		return d
	}
	if d := b.Load(); d != nil && d.alg == alg {
		return d
	}
	return nil
}

// remember keeps d as the Limiter for its algorithm, which compares: in
// the first of its slots that is free, else in place of the second's.
func (f *family) remember(d *Limiter) {
	slots := f.derived.Load()
	if slots == nil {
		f.derived.CompareAndSwap(nil, new([derivedSlots]atomic.Pointer[Limiter]))
		slots = f.derived.Load()
	}
	a, b := f.slots(slots, d.alg)
	if a.CompareAndSwap(nil, d) {
		return
	}
	b.Store(d)
}

// lookupID returns the Limiter kept for id, or nil.
func (f *family) lookupID(id paramsID) *Limiter {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byID[id]
}

// rememberID keeps d as the Limiter for id.
func (f *family) rememberID(id paramsID, d *Limiter) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.byID) >= maxByID {
		clear(f.byID)
	}
	f.byID[id] = d
}

// program returns the program for k, assembling it the first time.
func (f *family) program(k progKey) *program {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.progs[k]; ok {
		return p
	}
	src := k.body
	if k.argc >= 0 {
		src = luascript.Assemble([]string{k.body}, []int{k.argc}, TTLMargin)
	}
	p := newProgram(src)
	if len(f.progs) >= maxPrograms {
		clear(f.progs)
	}
	f.progs[k] = p
	return p
}

// addLeases keeps ls, weakly, for [Limiter.ReturnLeases].
func (f *family) addLeases(ls *leases) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leases = slices.DeleteFunc(f.leases, func(w weak.Pointer[leases]) bool { return w.Value() == nil })
	f.leases = append(f.leases, weak.Make(ls))
}

// leaseSets returns the leases of every Limiter of f still in use.
func (f *family) leaseSets() []*leases {
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []*leases
	for _, w := range f.leases {
		if ls := w.Value(); ls != nil {
			all = append(all, ls)
		}
	}
	return all
}

// localStore returns the in-process store of the algorithms named name.
func (f *family) localStore(name string) *localStore {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.locals[name]
	if !ok {
		s = newLocalStore()
		f.locals[name] = s
	}
	return s
}

// comparableTypes memoises comparableType.
var comparableTypes sync.Map // reflect.Type → bool

// comparableAlg reports whether alg is a value of plain data that equals
// itself, so that it can be a map key without panicking and equal values
// stand for equal parameters: a type made of numbers, strings and
// booleans, in structs and arrays, with no pointer, interface, slice, map,
// channel or func inside, holding no NaN.
func comparableAlg(alg Algorithm) bool {
	t := reflect.TypeOf(alg)
	if t == nil {
		return false
	}
	c, ok := comparableTypes.Load(t)
	if !ok {
		c = comparableType(t)
		comparableTypes.Store(t, c)
	}
	return c.(bool) && alg == alg
}

func comparableType(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.String,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return true
	case reflect.Array:
		return comparableType(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !comparableType(t.Field(i).Type) {
				return false
			}
		}
		return true
	}
	return false
}
