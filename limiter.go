package redislimit

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
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

// Option configures a [Limiter] in [New].
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
// its offset may differ. A nil now means time.Now.
func WithClock(now func() time.Time) Option {
	return func(l *Limiter) {
		if now == nil {
			now = time.Now
		}
		l.now = now
	}
}

// A Limiter decides, per key, whether calls are within the limits of its
// [Algorithm], with state kept in Redis so that every process sharing the
// Redis shares the limit. Each decision is one atomic script call: one round
// trip in steady state.
//
// A Limiter is safe for concurrent use by multiple goroutines.
type Limiter struct {
	client    redis.Scripter
	script    *redis.Script
	name      string
	limit     int
	args      []any // ARGV[4:], fixed at New
	prefix    string
	keyPrefix string           // prefix + name + ":{"
	now       func() time.Time // nil: Redis TIME
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
// does not contact Redis.
func New(client redis.Scripter, alg Algorithm, opts ...Option) (*Limiter, error) {
	if isNil(client) {
		return nil, ErrNilClient
	}
	if isNil(alg) {
		return nil, ErrNilAlgorithm
	}
	args, err := alg.Args()
	if err != nil {
		return nil, err
	}
	l := &Limiter{
		client: client,
		script: alg.Script(),
		name:   alg.Name(),
		limit:  alg.Limit(),
		args:   args,
		prefix: DefaultPrefix,
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
	case l.script == nil:
		return nil, fmt.Errorf("%w: algorithm %s has no script", ErrInvalidConfig, l.name)
	case strings.ContainsAny(l.prefix, "{}"):
		return nil, fmt.Errorf("%w: prefix %q holds '{' or '}'", ErrInvalidConfig, l.prefix)
	}
	l.keyPrefix = l.prefix + l.name + ":{"
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
	if err := resetScript.Run(ctx, l.client, []string{l.redisKey(key)}).Err(); err != nil {
		return l.wrap(err)
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
	args := make([]any, 3, 3+len(l.args))
	args[0] = argRedisTime
	if l.now != nil {
		args[0] = l.now().UnixMicro()
	}
	args[1], args[2] = n, mode
	args = append(args, l.args...)
	reply, err := l.script.Run(ctx, l.client, []string{l.redisKey(key)}, args...).Result()
	if err != nil {
		return Result{}, l.wrap(err)
	}
	r, err := parseReply(reply)
	if err != nil {
		return Result{}, l.wrap(err)
	}
	r.Limit = l.limit
	return r, nil
}

func (l *Limiter) redisKey(key string) string {
	return l.keyPrefix + key + "}"
}

func (l *Limiter) wrap(err error) error {
	return fmt.Errorf("redislimit: %s: %w", l.name, err)
}

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
