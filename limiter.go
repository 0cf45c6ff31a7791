package redislimit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors returned for bad input. Each is returned before anything is sent
// to Redis, so a call that returns one has written nothing. Match them with
// [errors.Is]; messages never contain the user's key.
var (
	// ErrNilClient is returned by [New] when the client is nil.
	ErrNilClient = errors.New("redislimit: nil client")
	// ErrNilAlgorithm is returned by [New] when the algorithm is nil.
	ErrNilAlgorithm = errors.New("redislimit: nil algorithm")
	// ErrInvalidConfig is returned by [New], wrapped with a description,
	// when an algorithm's parameters or an [Option] are out of range: a
	// limit, rate or burst below 1, a window or period under a millisecond
	// or over [MaxWindow], and the like.
	ErrInvalidConfig = errors.New("redislimit: invalid configuration")
	// ErrEmptyKey is returned when the key is "".
	ErrEmptyKey = errors.New("redislimit: empty key")
	// ErrKeyTooLong is returned when the key is longer than [MaxKeyLen] bytes.
	ErrKeyTooLong = errors.New("redislimit: key too long")
	// ErrInvalidCost is returned by [Limiter.AllowN] when n < 1.
	ErrInvalidCost = errors.New("redislimit: cost must be at least 1")
	// ErrCostExceedsLimit is returned by [Limiter.AllowN] when n is above the
	// algorithm's capacity ([Result.Limit]), so that the call could never be
	// allowed.
	ErrCostExceedsLimit = errors.New("redislimit: cost exceeds the limit")
	// ErrMalformedReply is returned, wrapped with a description, when a
	// script's reply does not follow the script contract described in the
	// package documentation.
	ErrMalformedReply = errors.New("redislimit: malformed script reply")
)

const (
	// MaxKeyLen is the longest key, in bytes, that a [Limiter] accepts.
	// Any byte string from 1 to MaxKeyLen bytes is a valid key.
	MaxKeyLen = 8 << 10
	// MaxWindow is the longest window, period or refill span accepted, so
	// that times in µs stay exact in Lua's double-precision numbers.
	MaxWindow = 10 * 365 * 24 * time.Hour
	// DefaultPrefix is the prefix of every Redis key a [Limiter] writes,
	// unless [WithPrefix] sets another.
	DefaultPrefix = "rl:"
)

// Result is the outcome of one decision. The zero value is a denial with no
// capacity and nothing to wait for, and is returned alongside errors.
type Result struct {
	// Allowed reports whether the call was admitted (for [Limiter.Peek]:
	// whether a call of cost 1 would be).
	Allowed bool
	// Limit is the capacity in units: a window's limit or a bucket's burst.
	Limit int
	// Remaining is how many more calls of cost 1 would be allowed right now.
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
}

// Algorithm is a rate-limiting algorithm that a [Limiter] runs as one Lua
// script per decision. [FixedWindow], [SlidingLog] and [TokenBucket] return
// the package's own. Implement it in any package to add another one: the
// [Limiter] then gives it key handling, validation, the time source, reply
// checking and every other feature. The package documentation ("Writing an
// algorithm") states the contract its script must follow.
//
// A Limiter calls the methods once, in [New]; they must not change later.
type Algorithm interface {
	// Name returns a short identifier, used in the Redis key so that
	// algorithms on the same user key never share state. It must be
	// non-empty and hold neither '{' nor '}'.
	Name() string
	// Limit returns the capacity, in units: the most that one key can be
	// granted at once. [Limiter.AllowN] refuses a larger cost with
	// [ErrCostExceedsLimit] without calling Redis.
	Limit() int
	// Script returns the script that makes one decision.
	Script() *redis.Script
	// Args returns the script's own arguments, passed as ARGV[4] onwards,
	// or an error wrapping [ErrInvalidConfig] when the parameters are out
	// of range.
	Args() ([]any, error)
}

// Option configures a [Limiter] in [New] or [NewLocal].
type Option func(*Limiter)

// WithPrefix sets the prefix of the limiter's Redis keys. The default is
// [DefaultPrefix]. Give limiters with different parameters different
// prefixes when they may see the same user keys. A prefix holding '{' or '}'
// is refused with [ErrInvalidConfig]: the hash tag is the user key's.
func WithPrefix(prefix string) Option {
	return func(l *Limiter) { l.prefix = prefix }
}

// WithClock makes the limiter read time from now, on the client, and pass
// it to the script, instead of the default: Redis's TIME, read inside the
// script, which keeps app servers with skewed clocks in agreement. Use it
// where Redis refuses TIME in scripts, or with a fake clock in tests. Keys
// still expire by Redis's clock, so now must advance at the real rate: only
// its offset may differ. Times are passed in µs since 1970 and must lie
// within about 285 years of it, where Lua's numbers hold them exactly. A
// nil now means time.Now.
func WithClock(now func() time.Time) Option {
	return func(l *Limiter) {
		if now == nil {
			now = time.Now
		}
		l.now = now
	}
}

// WithHashedKeys stores each user key as the first 128 bits of its
// HMAC-SHA-256 under secret, in hex, instead of as itself:
// "rl:tb:{9f86d081884c7d659a2feaa0c55ad015}". Use it when keys come from
// clients (an IP, a header, an API key): on Redis Cluster an attacker who
// can choose keys can otherwise pick ones that share a hash slot and load
// one shard, and every key costs Redis memory in proportion to its length.
// With a secret of 32 random bytes, kept by every app server that shares
// the limits, keys spread evenly over slots and take 32 bytes whatever
// their length. It costs about 0.3µs and two allocations per call. Keys
// and limits written with and without it are distinct. By default keys are
// stored as they are.
func WithHashedKeys(secret []byte) Option {
	s := bytes.Clone(secret)
	return func(l *Limiter) {
		l.hashes = &sync.Pool{New: func() any { return hmac.New(sha256.New, s) }}
	}
}

// A Limiter decides, per key, whether calls are within the limits of its
// [Algorithm], with state kept in Redis so that every process sharing the
// Redis shares the limit. Each decision is one atomic script call: one round
// trip in steady state.
//
// A Limiter is safe for concurrent use by multiple goroutines.
type Limiter struct {
	client    redis.Scripter // nil for NewLocal
	script    *redis.Script
	name      string
	limit     int   // the largest cost: the capacity, or localLimit for NewLocal
	args      []any // ARGV[4:], fixed at New
	prefix    string
	keyPrefix string           // prefix + name + ":{"
	hashes    *sync.Pool       // of HMAC hash.Hash, for WithHashedKeys; nil: keys as they are
	now       func() time.Time // nil: Redis TIME (the local clock is then time.Now)

	policy    FailurePolicy
	instances int
	onError   func(context.Context, error)
	timeout   time.Duration
	inline    bool // the client bounds socket reads by context deadlines
	breaker   breaker
	abandoned atomic.Int32 // calls that timed out and still wait for Redis

	local       *localStore   // NewLocal, or the FailLocal fallback
	localLimit  int           // the local capacity
	localPeriod time.Duration // how long an empty local key takes to be full
}

//go:embed scripts/reset.lua
var resetLua string

// resetScript deletes one limiter key. It is a script, not DEL, because a
// Limiter holds only a [redis.Scripter].
var resetScript = redis.NewScript(resetLua)

// Values reused for every call, so that passing them allocates nothing.
var (
	argRedisTime any = ""
	argConsume   any = "1"
	argReport    any = "0"
)

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
	if isNil(alg) {
		return nil, ErrNilAlgorithm
	}
	args, err := alg.Args()
	if err != nil {
		return nil, err
	}
	l := &Limiter{
		client:    client,
		script:    alg.Script(),
		name:      alg.Name(),
		limit:     alg.Limit(),
		args:      args,
		prefix:    DefaultPrefix,
		instances: 1,
		timeout:   DefaultTimeout,
		breaker:   breaker{threshold: breakerThreshold, cooldown: breakerCooldown},
	}
	for _, o := range opts {
		if o != nil {
			o(l)
		}
	}
	switch {
	case l.name == "" || strings.ContainsAny(l.name, "{}"):
		return nil, fmt.Errorf("%w: algorithm name %q must be non-empty, without '{' or '}'", ErrInvalidConfig, l.name)
	case l.limit < 1:
		return nil, fmt.Errorf("%w: algorithm %s has capacity %d, want at least 1", ErrInvalidConfig, l.name, l.limit)
	case l.script == nil && client != nil:
		return nil, fmt.Errorf("%w: algorithm %s has no script", ErrInvalidConfig, l.name)
	case strings.ContainsAny(l.prefix, "{}"):
		return nil, fmt.Errorf("%w: prefix %q holds '{' or '}'", ErrInvalidConfig, l.prefix)
	case l.policy < FailError || l.policy > FailLocal:
		return nil, fmt.Errorf("%w: unknown failure policy %d", ErrInvalidConfig, int(l.policy))
	case l.instances < 1 || l.instances > maxUnits:
		return nil, fmt.Errorf("%w: %d local instances, want at least 1", ErrInvalidConfig, l.instances)
	case l.timeout <= 0:
		return nil, fmt.Errorf("%w: timeout %v, want more than 0", ErrInvalidConfig, l.timeout)
	}
	l.keyPrefix = l.prefix + l.name + ":{"
	if client == nil || l.policy == FailLocal {
		la, ok := alg.(LocalAlgorithm)
		if !ok {
			return nil, fmt.Errorf("%w: algorithm %s cannot run in process memory (no NewLocalState method)", ErrInvalidConfig, l.name)
		}
		l.local = newLocalStore(la, l.instances)
		l.localLimit = int(localUnits(l.limit, l.instances))
		l.localPeriod = la.NewLocalState(l.instances).Decide(0, l.localLimit, true).ResetAfter
		if l.localPeriod <= 0 {
			l.localPeriod = time.Second
		}
	}
	if client == nil {
		l.limit = l.localLimit
	} else {
		l.inline = honoursDeadlines(client)
	}
	return l, nil
}

// isNil reports whether v is nil or an interface holding a nil pointer.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch x := v.(type) {
	case *redis.Client:
		return x == nil
	case *redis.ClusterClient:
		return x == nil
	case *redis.Ring:
		return x == nil
	}
	return false
}

// Allow reports whether one call on key is allowed now, and consumes one
// unit if it is. It is AllowN(ctx, key, 1).
func (l *Limiter) Allow(ctx context.Context, key string) (Result, error) {
	return l.decide(ctx, key, 1, argConsume)
}

// AllowN reports whether a call of cost n on key is allowed now, and
// consumes n units if it is. It is all or nothing: a denied call consumes
// nothing. A denial is a Result with Allowed false, not an error; an error
// means the input was bad ([ErrEmptyKey], [ErrKeyTooLong], [ErrInvalidCost],
// [ErrCostExceedsLimit], with nothing sent to Redis), the context ended, or
// Redis failed.
func (l *Limiter) AllowN(ctx context.Context, key string, n int) (Result, error) {
	return l.decide(ctx, key, n, argConsume)
}

// Peek reports what Allow would return for key now, without consuming
// anything.
func (l *Limiter) Peek(ctx context.Context, key string) (Result, error) {
	return l.decide(ctx, key, 1, argReport)
}

// Reset deletes key's state, giving it full capacity again. Resetting a key
// with no state is not an error.
func (l *Limiter) Reset(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return l.wrap(err)
	}
	if l.local != nil {
		l.local.reset(key)
	}
	if l.client == nil {
		return nil
	}
	if _, err := l.callRedis(ctx, resetScript, key, 0, nil); err != nil {
		if cerr := callerDone(ctx); cerr != nil {
			return l.wrap(cerr)
		}
		err = l.wrap(err)
		if l.onError != nil {
			l.onError(ctx, err)
		}
		return err
	}
	return nil
}

func (l *Limiter) decide(ctx context.Context, key string, n int, mode any) (Result, error) {
	if err := checkKey(key); err != nil {
		return Result{}, err
	}
	if n < 1 {
		return Result{}, ErrInvalidCost
	}
	if n > l.limit {
		return Result{}, ErrCostExceedsLimit
	}
	if err := ctx.Err(); err != nil {
		return Result{}, l.wrap(err)
	}
	if l.client == nil {
		return l.decideLocal(key, n, mode == argConsume, false), nil
	}
	reply, err := l.callRedis(ctx, l.script, key, n, mode)
	if err == nil {
		var r Result
		if r, err = parseReply(reply); err == nil {
			r.Limit = l.limit
			return r, nil
		}
	}
	if cerr := callerDone(ctx); cerr != nil {
		return Result{}, l.wrap(cerr)
	}
	err = l.wrap(err)
	if l.onError != nil {
		l.onError(ctx, err)
	}
	switch l.policy {
	case FailOpen:
		return Result{Allowed: true, Limit: l.limit, Remaining: l.limit, Degraded: true}, nil
	case FailClosed:
		return Result{Limit: l.limit, RetryAfter: l.breaker.cooldown, ResetAfter: l.breaker.cooldown, Degraded: true}, nil
	case FailLocal:
		return l.decideLocal(key, n, mode == argConsume, true), nil
	}
	return Result{}, err
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
		r = l.local.decide(key, t.UnixMicro(), n, consume)
	} else {
		r = l.local.decide(key, t.UnixMicro(), 1, false)
		r.Allowed, r.RetryAfter = false, l.localPeriod
	}
	r.Limit, r.Degraded = l.localLimit, degraded
	return r
}

// appendArgs appends a decision's script arguments to dst: the time (or ""
// for Redis TIME), the cost n, the mode, and the algorithm's own. A nil
// mode appends nothing: a script without arguments.
func (l *Limiter) appendArgs(dst []any, n int, mode any) []any {
	if mode == nil {
		return dst
	}
	now := argRedisTime
	if l.now != nil {
		now = l.now().UnixMicro()
	}
	return append(append(dst, now, n, mode), l.args...)
}

func (l *Limiter) redisKey(key string) string {
	if l.hashes == nil {
		return l.keyPrefix + key + "}"
	}
	h := l.hashes.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(key))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	l.hashes.Put(h)
	var hx [32]byte
	hex.Encode(hx[:], sum[:16])
	return l.keyPrefix + string(hx[:]) + "}"
}

// wrap names the algorithm in err, which it wraps: "redislimit: fw: " and
// err's text, without repeating the package prefix that the package's own
// errors carry.
func (l *Limiter) wrap(err error) error {
	return &algError{name: l.name, err: err}
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
	var v [4]int64
	for i, x := range a {
		n, ok := x.(int64)
		if !ok {
			return Result{}, fmt.Errorf("%w: element %d is %T, want an integer", ErrMalformedReply, i, x)
		}
		if n < 0 {
			return Result{}, fmt.Errorf("%w: element %d is negative", ErrMalformedReply, i)
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
