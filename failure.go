package redislimit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// FailurePolicy says what a [Limiter] decides when Redis fails: a
// connection error, a timeout ([ErrTimeout]), an open circuit
// ([ErrCircuitOpen]), an error reply or a malformed reply. It never applies
// to bad input ([ErrEmptyKey], [ErrInvalidCost], [ErrCostExceedsLimit], …)
// nor to a caller's context that ended: those errors are always returned.
// The zero value is [FailError].
type FailurePolicy int

const (
	// FailError returns the error with the zero [Result], and the caller
	// decides. It is the default.
	FailError FailurePolicy = iota
	// FailOpen allows the call: Allowed and Degraded are true, Remaining is
	// the limit, and the error is only passed to [WithOnError].
	FailOpen
	// FailClosed denies the call: Allowed is false, Degraded true, Remaining
	// 0, and RetryAfter and ResetAfter the circuit breaker's cool-down
	// (500ms), after which Redis is tried again.
	FailClosed
	// FailLocal decides with an in-process limiter running the same
	// algorithm in this process's memory, with the capacity divided by
	// [WithLocalInstances]. Degraded is true. The algorithm must implement
	// [LocalAlgorithm] (the package's own do), or [New] returns an error
	// wrapping [ErrInvalidConfig]. Local state starts empty: what was
	// consumed in Redis before the failure is not known locally.
	FailLocal
)

// String returns the policy's name, such as "FailOpen".
func (p FailurePolicy) String() string {
	switch p {
	case FailError:
		return "FailError"
	case FailOpen:
		return "FailOpen"
	case FailClosed:
		return "FailClosed"
	case FailLocal:
		return "FailLocal"
	}
	return fmt.Sprintf("FailurePolicy(%d)", int(p))
}

// Errors about Redis being unavailable, wrapped with the algorithm's name;
// match them with [errors.Is].
var (
	// ErrTimeout is returned, wrapping the underlying error if there is one,
	// when Redis did not answer a call within the limiter's timeout
	// ([WithTimeout]).
	ErrTimeout = errors.New("redislimit: redis call timed out")
	// ErrCircuitOpen is returned when the limiter did not call Redis at all:
	// its circuit breaker is open after consecutive failures, or too many
	// timed-out calls are still waiting for Redis to answer.
	ErrCircuitOpen = errors.New("redislimit: circuit open, redis not called")
)

const (
	// DefaultTimeout is how long a decision may wait for Redis unless
	// [WithTimeout] sets another duration: far below go-redis's own 3s read
	// and 5s dial timeouts, yet above the latency spikes of a busy process
	// (hundreds of goroutines deciding at once, a garbage collection, the
	// first calls dialing their connections), which are not outages.
	DefaultTimeout = 500 * time.Millisecond

	// breakerThreshold is how many calls in a row must fail for the circuit
	// breaker to open.
	breakerThreshold = 5
	// breakerCooldown is how long the breaker stays open before it lets one
	// probe call through.
	breakerCooldown = 500 * time.Millisecond
	// maxAbandoned is how many calls that timed out may still be waiting
	// for Redis, per limiter, before new calls go straight to the policy.
	maxAbandoned = 128
	// workerIdle is how long an idle call worker waits for work before it
	// ends.
	workerIdle = 500 * time.Millisecond
)

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
// Redis, from the moment it is sent, including a reconnection and the EVAL
// that follows a NOSCRIPT. Past it the call gives up with [ErrTimeout] and
// the [FailurePolicy] decides. The bound holds for clients built with
// default options too, where go-redis ignores context deadlines on socket
// reads. The default is [DefaultTimeout] (500ms); a d of zero or less makes
// [New] return an error wrapping [ErrInvalidConfig]. A caller's context with
// an earlier deadline still ends the call sooner.
func WithTimeout(d time.Duration) Option {
	return func(l *Limiter) { l.timeout = d }
}

// breaker is a circuit breaker: after threshold consecutive failures, when
// no call has succeeded since the last of them started, it is open for
// cooldown, during which calls are refused without touching the network;
// then one probe is let through, and its outcome closes the breaker or
// opens it again. The second condition keeps a busy process, whose calls
// time out while waiting for its own CPU or connection pool even as Redis
// answers others, from shutting itself off. Its methods are safe for
// concurrent use.
type breaker struct {
	threshold int32
	cooldown  time.Duration

	failures  atomic.Int32 // consecutive
	lastOK    atomic.Int64 // Unix ns of the last success
	openUntil atomic.Int64 // Unix ns; 0 when closed
	probing   atomic.Bool  // a probe is in flight
}

// allow reports whether a call may go to Redis now, and whether it is the
// probe of a half-open breaker.
func (b *breaker) allow() (ok, probe bool) {
	until := b.openUntil.Load()
	if until == 0 {
		return true, false
	}
	if time.Now().UnixNano() < until {
		return false, false
	}
	if b.probing.CompareAndSwap(false, true) {
		return true, true
	}
	return false, false
}

// success records a call that Redis answered.
func (b *breaker) success() {
	// At most one store a millisecond, so that busy limiters do not fight
	// over the cache line.
	if now := time.Now().UnixNano(); now-b.lastOK.Load() > int64(time.Millisecond) {
		b.lastOK.Store(now)
	}
	if b.failures.Load() != 0 {
		b.failures.Store(0)
	}
	if b.openUntil.Load() != 0 {
		b.openUntil.Store(0)
		b.probing.Store(false)
	}
}

// failure records a call, started at start (Unix ns), that Redis did not
// answer.
func (b *breaker) failure(probe bool, start int64) {
	if n := b.failures.Add(1); probe || n >= b.threshold && b.lastOK.Load() < start {
		b.openUntil.Store(time.Now().Add(b.cooldown).UnixNano())
		b.probing.Store(false)
	}
}

// release ends a probe whose outcome says nothing about Redis (the caller's
// context ended), so that another call can probe.
func (b *breaker) release(probe bool) {
	if probe {
		b.probing.Store(false)
	}
}

// outage reports whether err means Redis is unavailable, as opposed to an
// answer about this one call (an error reply such as WRONGTYPE, or a reply
// that breaks the script contract), which says Redis is up.
func outage(err error) bool {
	if errors.Is(err, ErrMalformedReply) || errors.Is(err, redis.Nil) {
		return false
	}
	var re redis.Error
	if !errors.As(err, &re) {
		return true
	}
	msg := re.Error()
	for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "OOM", "MISCONF", "NOREPLICAS"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// honoursDeadlines reports whether client bounds socket reads by a
// context's deadline, so that a call can run on the caller's goroutine.
func honoursDeadlines(client redis.Scripter) bool {
	switch c := client.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}

// Call states, for call.state.
const (
	callRunning int32 = iota
	callFinished
	callAbandoned
)

// A call is one script call to Redis made on a worker goroutine, for
// clients that do not bound socket reads by a context's deadline: the
// caller stops waiting at the limiter's timeout while the worker finishes
// the call, bounded by go-redis's own dial, pool and socket timeouts. The
// caller and the worker agree through state on who owns the call once it
// is over: the caller when the call finished in time (it reads the outcome
// and recycles the call), the worker when the caller gave up (it drops the
// outcome and the call). A call is referenced by those two alone, never by
// go-redis, so recycling it is safe.
type call struct {
	l      *Limiter
	ctx    context.Context // the caller's
	script *redis.Script
	keys   [1]string
	args   []any

	timer *time.Timer   // the caller's timeout; only the caller reads it
	state atomic.Int32  // callRunning, callFinished or callAbandoned
	ready chan struct{} // receives one value when the worker finishes in time
	reply any
	err   error
}

var callPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &call{ready: make(chan struct{}, 1), timer: t}
}}

// run makes the call and hands the outcome to the waiting caller, or, if
// the caller gave up, drops it.
func (c *call) run() {
	c.reply, c.err = c.script.Run(c.ctx, c.l.client, c.keys[:], c.args...).Result()
	if c.state.CompareAndSwap(callRunning, callFinished) {
		c.ready <- struct{}{}
		return
	}
	c.l.abandoned.Add(-1)
}

// recycle returns c, finished and read, to callPool.
func (c *call) recycle() {
	c.timer.Stop()
	c.l, c.ctx, c.script, c.keys[0], c.reply, c.err = nil, nil, nil, "", nil, nil
	clear(c.args)
	c.args = c.args[:0]
	c.state.Store(callRunning)
	callPool.Put(c)
}

// workCh hands calls to idle workers.
var workCh = make(chan *call)

// dispatch runs c on an idle worker, or on a new one.
func dispatch(c *call) {
	select {
	case workCh <- c:
	default:
		go worker(c)
	}
}

// worker runs calls until none has come for workerIdle. Workers are shared
// by every Limiter and end by themselves, so none outlives its last call by
// more than workerIdle.
func worker(c *call) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		c.run()
		idle.Reset(workerIdle)
		select {
		case c = <-workCh:
		case <-idle.C:
			return
		}
	}
}

// callRedis runs script on key, with the arguments of [Limiter.appendArgs],
// within the limiter's timeout, and keeps the circuit breaker up to date.
// It returns the caller's context error when that context ended, an error
// wrapping [ErrCircuitOpen] or [ErrTimeout], or the script's reply and
// error.
func (l *Limiter) callRedis(ctx context.Context, script *redis.Script, key string, n int, mode any) (any, error) {
	ok, probe := l.breaker.allow()
	if !ok {
		return nil, ErrCircuitOpen
	}
	if !l.inline && l.abandoned.Load() >= maxAbandoned {
		l.breaker.release(probe)
		return nil, fmt.Errorf("%w: %d timed-out calls still wait for Redis", ErrCircuitOpen, maxAbandoned)
	}
	start := time.Now()
	deadline := start.Add(l.timeout)
	rkey := l.redisKey(key)
	var reply any
	var err error
	if l.inline {
		// The client bounds socket reads, dials and pool waits by the
		// context's deadline; a caller's earlier deadline wins.
		cctx := ctx
		if d, ok := ctx.Deadline(); !ok || d.After(deadline) {
			var cancel context.CancelFunc
			cctx, cancel = context.WithDeadline(ctx, deadline)
			defer cancel()
		}
		args := l.appendArgs(make([]any, 0, 3+len(l.args)), n, mode)
		reply, err = script.Run(cctx, l.client, []string{rkey}, args...).Result()
	} else {
		c := callPool.Get().(*call)
		c.l, c.ctx, c.script = l, ctx, script
		c.keys[0] = rkey
		c.args = l.appendArgs(c.args, n, mode)
		c.timer.Reset(l.timeout)
		dispatch(c)
		finished := false
		select {
		case <-c.ready:
			finished = true
		case <-c.timer.C:
		case <-ctx.Done():
		}
		if !finished && c.state.CompareAndSwap(callRunning, callAbandoned) {
			// The timeout or the caller's context came first. The worker
			// finishes on its own, bounded by go-redis's timeouts, and
			// drops the call.
			l.abandoned.Add(1)
			err = context.DeadlineExceeded
		} else {
			if !finished { // it finished meanwhile: the outcome is on its way
				<-c.ready
			}
			reply, err = c.reply, c.err
			c.recycle()
		}
	}
	if err == nil {
		l.breaker.success()
		return reply, nil
	}
	switch {
	case callerDone(ctx) != nil:
		l.breaker.release(probe)
		return nil, callerDone(ctx)
	case !time.Now().Before(deadline):
		l.breaker.failure(probe, start.UnixNano())
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("%w after %v", ErrTimeout, l.timeout)
		}
		return nil, fmt.Errorf("%w after %v: %w", ErrTimeout, l.timeout, err)
	case outage(err):
		l.breaker.failure(probe, start.UnixNano())
	default:
		l.breaker.success()
	}
	return nil, err
}

// callerDone returns ctx's error, or context.DeadlineExceeded once ctx's
// deadline has passed by the clock: a socket deadline set from it can fire
// before the context's own timer does.
func callerDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}
