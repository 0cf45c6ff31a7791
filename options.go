package redislimit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"
)

// Option configures a [Limiter] in [New] or [NewLocal].
type Option func(*Limiter)

// WithPrefix sets the prefix of the limiter's Redis keys. The default is
// [DefaultPrefix]. Limiters of one kind of algorithm with one prefix share
// a user key's state whatever their parameters: that is how
// [Limiter.Using] carries a key's usage across a change of limit. Give
// limiters different prefixes only for limits that must count apart, such
// as two policies of one kind on the same keys. A prefix holding '{' or
// '}' is refused with [ErrInvalidConfig]: the hash tag is the user key's.
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
// stored as they are. An empty secret makes [New] return an error
// wrapping [ErrInvalidConfig].
func WithHashedKeys(secret []byte) Option {
	s := bytes.Clone(secret)
	return func(l *Limiter) {
		if len(s) == 0 {
			l.optErr = fmt.Errorf("%w: WithHashedKeys with an empty secret", ErrInvalidConfig)
			return
		}
		l.hashes = &sync.Pool{New: func() any { return hmac.New(sha256.New, s) }}
	}
}

// WithFailurePolicy sets what the limiter decides when Redis fails. The
// default is [FailError]. A policy outside the declared constants makes
// [New] and [NewLocal] return an error wrapping [ErrInvalidConfig]; beyond
// that check, an in-process limiter ignores it, as it does not fail.
func WithFailurePolicy(p FailurePolicy) Option {
	return func(l *Limiter) { l.policy = p }
}

// WithLocalInstances sets how many processes share the limit when a
// decision is made in process memory ([FailLocal] or [NewLocal]): the
// capacity is divided by n, rounded down, and is at least 1 unit; a token
// bucket's refill rate is divided by n too. The default is 1. An n below 1
// (or above 2^50) makes [New] and [NewLocal] return an error wrapping
// [ErrInvalidConfig].
func WithLocalInstances(n int) Option {
	return func(l *Limiter) { l.instances = n }
}

// WithOnError sets a function called with every error from Redis: those the
// [FailurePolicy] turns into a decision and those it returns, including
// [ErrTimeout] and [ErrCircuitOpen], and errors from [Limiter.Reset]. It is
// not called for bad input or for a caller's context that ended. f runs on
// the calling goroutine, with the caller's ctx, before the call returns, so
// it should be quick; it may be called concurrently. The default is none. A
// logger fits:
//
//	redislimit.WithOnError(func(ctx context.Context, err error) {
//		slog.WarnContext(ctx, "rate limiter degraded", "err", err)
//	})
func WithOnError(f func(ctx context.Context, err error)) Option {
	return func(l *Limiter) { l.onError = f }
}

// WithTimeout sets how long one decision (or [Limiter.Reset]) may wait for
// Redis, counted from when the call starts: its time in a batch's queue,
// go-redis's pool waits, dials, a reconnection and the EVAL that follows
// a NOSCRIPT. Past it the call gives up with [ErrTimeout] and the
// [FailurePolicy] decides. A caller's context with an earlier deadline
// still ends the call sooner. The default is [DefaultTimeout]; a d of
// zero or less makes [New] return an error wrapping [ErrInvalidConfig].
//
// The bound holds on clients built with default options too, where
// go-redis lets a stalled socket read run for its ReadTimeout whatever
// the context says: there the call runs on a shared worker goroutine, the
// decision stops waiting at the timeout, and the worker ends by itself
// once go-redis's own read timeout has passed; while 128 such calls of a
// limiter are pending, decisions go straight to the policy
// ([ErrCircuitOpen]), so goroutines do not pile up during an outage. On a
// client with ContextTimeoutEnabled a lone call runs on the caller's
// goroutine under the deadline, which saves two goroutine wake-ups: set
// it where latency matters. A call given up on may still run in Redis
// and consume: a key is charged more, never less.
func WithTimeout(d time.Duration) Option {
	return func(l *Limiter) { l.timeout = d }
}

// DefaultBatchSize is the most decisions one pipeline carries unless
// [WithBatchSize] sets another number.
const DefaultBatchSize = 128

// WithBatchSize sets the most decisions sent to Redis in one pipeline.
// When decisions are made concurrently on a *redis.Client,
// *redis.ClusterClient or *redis.Ring, by one Limiter or by several that
// share the client and the batch size, a decision that finds a send in
// flight to its Redis node waits for it to end and then goes with every
// decision for that node that arrived meanwhile, up to n, as one pipeline
// of EVALSHAs: one round trip for them all. A decision that finds none in
// flight is sent at once, alone, so a lone caller never waits for a
// batch. Each decision keeps its own timeout, failure policy and error. The default is
// [DefaultBatchSize]; 1 sends every decision alone; n below 1 makes [New]
// return an error wrapping [ErrInvalidConfig].
func WithBatchSize(n int) Option {
	return func(l *Limiter) { l.maxBatch = n }
}

// WithDenyCache makes the limiter remember, in process memory, the last
// denial Redis gave for up to maxKeys keys, and answer the calls on a
// denied key without Redis until the moment one could succeed: zero round
// trips while a client floods a key it has exhausted. The answer is the
// one Redis gave, aged: Allowed false, the same Remaining, and RetryAfter
// and ResetAfter less the time passed since the denied call was sent.
//
// It never admits a call: it denies only what Redis would deny, and stops
// no later than the real denial does, since RetryAfter counts from when
// the denied call was sent. A call of a smaller cost than the one denied,
// which may fit sooner, goes to Redis. It relies on the algorithm's
// RetryAfter being the earliest moment a call of that cost or more could
// succeed, as the package's algorithms (and the script contract) promise.
// [Limiter.Reset] on this limiter clears the key at once; a Reset or a
// change made by another process is seen at most the remaining RetryAfter
// later. Past maxKeys denied keys, arbitrary ones are forgotten and go to
// Redis again. Turn it on where clients retry denied calls without waiting
// (a flood, a misbehaving client, an attack): denials then cost no round
// trip. It costs a map lookup a call. maxKeys below 1 makes [New] return an
// error wrapping [ErrInvalidConfig]. By default there is none.
func WithDenyCache(maxKeys int) Option {
	return func(l *Limiter) {
		l.denyKeys = maxKeys
		if maxKeys < 1 {
			l.denyKeys = -1
		}
	}
}

// WithShadowMode makes the limiter deny no one: decisions are made and
// recorded as usual (in Redis, the deny cache and the [Observer]), but a
// call the limit denies is returned with Allowed true and
// [Result.Shadowed] set, and consumes nothing, as a denied call never
// does. Use it to roll out a new limit: watch the [Shadowed] outcome, or
// Result.Shadowed, to see whom it would deny, then turn it on. It applies
// to every decision: Allow, AllowN, Peek, AllowMany, Wait (a shadowed
// call returns at once), the deny cache's answers and the failure
// policies' (a [FailClosed] denial is admitted too, still Degraded).
// [Limiter.Debit] and [Limiter.Refund] charge as usual. The httplimit
// middleware serves a shadowed request and still sends the RateLimit
// fields of the denial.
func WithShadowMode() Option {
	return func(l *Limiter) { l.shadow = true }
}

// WithLeases lets a hot key be decided in process memory without ever
// going over its limit: once one key's own rate makes it pay, the Limiter
// takes up to maxUnits units of it from Redis in one script call
// (consumed there, as [Limiter.AllowN] consumes them) and admits calls
// from them in memory, for at most maxAge. Unused units go back to Redis
// when a lease ends. The package documentation ("Hot keys") has the
// guarantees and how a lease's size follows the key's rate; in short:
//
//   - Every admitted unit was consumed in Redis first, so processes
//     sharing a Redis admit together no more than one would.
//   - A process holds at most maxUnits unused units of a key, for at most
//     maxAge: the most its limit under-admits.
//   - A cold key decides in Redis, exactly as without leases.
//
// A decision admitted from a lease has Allowed set, RetryAfter 0,
// Remaining the units Redis had left when the lease was taken plus those
// still unused in it (in one process, what Redis would say, refill
// aside), and ResetAfter Redis's when the lease was taken less the time
// since; its [Observation] has Leased set, and no round trip but for the
// call that asked Redis for the lease. maxUnits
// below 1 or above [MaxDebit], or maxAge below a µs or above
// [MaxWindow], makes [New] return an error wrapping [ErrInvalidConfig];
// [NewConcurrency] refuses the option, and [NewLocal] ignores it. By
// default there are none: every decision goes to Redis.
func WithLeases(maxUnits int, maxAge time.Duration) Option {
	return func(l *Limiter) {
		switch {
		case maxUnits < 1 || maxUnits > MaxDebit:
			l.optErr = fmt.Errorf("%w: leases of %d units, want 1 to %d", ErrInvalidConfig, maxUnits, MaxDebit)
		case maxAge < time.Microsecond || maxAge > MaxWindow:
			l.optErr = fmt.Errorf("%w: leases of %v, want 1µs to %v", ErrInvalidConfig, maxAge, MaxWindow)
		default:
			l.leaseUnits, l.leaseAge = int64(maxUnits), maxAge
		}
	}
}
