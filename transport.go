package redislimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

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
