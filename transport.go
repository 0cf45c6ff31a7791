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

// This file is the path of a ready request to Redis and back: the sender's
// policy (the limiter's timeout, the circuit breaker, the bound on calls
// still waiting for Redis), the call on the caller's goroutine or on a
// worker, and each caller's deadline. The wire format is in request.go;
// the batches shared by the limiters of one client are in batch.go.

// A sender sends one limiter's ready requests to Redis, each within the
// limiter's timeout, and keeps the limiter's circuit breaker. It never
// calls back into the Limiter. Its methods are safe for concurrent use.
type sender struct {
	client  redis.Scripter
	timeout time.Duration
	// inline is set when client bounds socket reads by a context's
	// deadline, so that a call can run on the caller's goroutine; else it
	// runs on a worker, and the caller stops waiting at its deadline.
	inline  bool
	batches *batcher // shared by the limiters on client; nil: every call alone

	breaker   breaker
	abandoned atomic.Int32 // calls that timed out and still wait for Redis
}

// newSender returns the sender of a limiter on client, with the given
// timeout and the batch bound of [WithBatchSize].
func newSender(client redis.Scripter, timeout time.Duration, maxBatch int) *sender {
	inline := honoursDeadlines(client)
	return &sender{
		client:  client,
		timeout: timeout,
		inline:  inline,
		batches: sharedBatcher(client, maxBatch, inline),
		breaker: breaker{threshold: breakerThreshold, cooldown: breakerCooldown},
	}
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

// call sends r within the timeout, and keeps the circuit breaker up to
// date. It returns the caller's context error when that context ended, an
// error wrapping [ErrCircuitOpen] or [ErrTimeout], or the script's reply
// and error.
func (s *sender) call(ctx context.Context, r request) (any, error) {
	start := time.Now()
	ok, probe := s.breaker.allow(start)
	if !ok {
		return nil, ErrCircuitOpen
	}
	deadline := start.Add(s.timeout)
	var reply any
	var err error
	var ln *lane
	var queued *call
	if s.batches != nil {
		ln, queued = s.batches.enqueue(r, deadline)
	}
	if queued != nil {
		reply, err, _ = queued.wait(ctx)
	} else {
		reply, err = s.sendAlone(ctx, r, deadline, ln)
	}
	if err == nil {
		s.breaker.success(time.Now())
		if b := s.batches; b != nil && b.node != nil && !b.routed.Load() {
			b.routed.Store(true)
		}
		return reply, nil
	}
	return nil, s.failed(ctx, err, probe, start)
}

// sendAlone sends r by itself, on the caller's goroutine when the client
// allows it, or else on a worker, and frees its slot in ln, if ln is not
// nil, once the caller stops waiting: a send that outlives its caller
// holds no slot.
func (s *sender) sendAlone(ctx context.Context, r request, deadline time.Time, ln *lane) (any, error) {
	if ln != nil {
		defer ln.release()
	}
	if s.inline {
		// The client bounds socket reads, dials and pool waits by the
		// context's deadline; a caller's earlier deadline wins.
		cctx := ctx
		if d, ok := ctx.Deadline(); !ok || d.After(deadline) {
			var cancel context.CancelFunc
			cctx, cancel = context.WithDeadline(ctx, deadline)
			defer cancel()
		}
		return send(cctx, s.client, &r)
	}
	return onWorker(job{ctx: ctx, call: newCall(r, deadline, callQueued), client: s.client, abandoned: &s.abandoned})
}

// callMany sends reqs together, in one pipeline when the client can
// pipeline (else one after another), within the timeout for the whole,
// and keeps the circuit breaker up to date. It returns each request's
// reply and error, or an error for the whole call as [sender.call] does
// when none was answered in time.
func (s *sender) callMany(ctx context.Context, reqs []request) ([]any, []error, error) {
	start := time.Now()
	ok, probe := s.breaker.allow(start)
	if !ok {
		return nil, nil, ErrCircuitOpen
	}
	deadline := start.Add(s.timeout)
	calls := make([]call, len(reqs))
	batch := make([]*call, len(reqs))
	for i := range reqs {
		calls[i].request = reqs[i]
		batch[i] = &calls[i]
	}
	var err error
	if s.inline {
		cctx, cancel := context.WithDeadline(ctx, deadline)
		sendAll(cctx, s.client, batch)
		cancel()
	} else {
		_, err = onWorker(job{ctx: ctx, call: newCall(request{}, deadline, callQueued), client: s.client, abandoned: &s.abandoned, batch: batch})
	}
	if err == nil {
		replies, errs := make([]any, len(reqs)), make([]error, len(reqs))
		var down error
		answered := false
		for i, c := range batch {
			replies[i], errs[i] = c.reply, c.err
			switch {
			case c.err == nil || !outage(c.err):
				answered = true
			case down == nil:
				down = c.err
			}
		}
		switch {
		case down == nil:
			s.breaker.success(time.Now())
			return replies, errs, nil
		case answered:
			// Some nodes answered: each key keeps its own outcome, and
			// one whose node ran out of time says so as a call alone
			// would.
			now := time.Now()
			s.breaker.failure(probe, start, now)
			if !now.Before(deadline) {
				for i, e := range errs {
					if e != nil && outage(e) {
						errs[i] = s.timedOut(e)
					}
				}
			}
			return replies, errs, nil
		}
		err = down // none answered: one failure for the whole call
	}
	return nil, nil, s.failed(ctx, err, probe, start)
}

// failed updates the circuit breaker after a call, started at start, that
// ended with err, and returns the error to report: the caller's context
// error, an error wrapping [ErrTimeout] past the timeout, or err.
func (s *sender) failed(ctx context.Context, err error, probe bool, start time.Time) error {
	now := time.Now()
	switch {
	case callerDone(ctx) != nil:
		s.breaker.release(probe)
		return callerDone(ctx)
	case !now.Before(start.Add(s.timeout)):
		s.breaker.failure(probe, start, now)
		return s.timedOut(err)
	case outage(err):
		s.breaker.failure(probe, start, now)
	default:
		s.breaker.success(now)
	}
	return err
}

// timedOut returns err, from a call that ran out of the timeout, as an
// error wrapping [ErrTimeout].
func (s *sender) timedOut(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w after %v", ErrTimeout, s.timeout)
	}
	return fmt.Errorf("%w after %v: %w", ErrTimeout, s.timeout, err)
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

// onWorker sends j, whose call is not yet handed to anyone, on a worker,
// for a client that does not bound socket reads by a context's deadline,
// and waits for it until the call's deadline or the end of j's context:
// the one place where a caller gives up at its deadline while another
// goroutine finishes the send. A call the caller gave up on counts in
// j.abandoned until the worker is done with it, bounded by go-redis's own
// timeouts; past maxAbandoned such calls, no call is sent.
func onWorker(j job) (any, error) {
	if j.abandoned.Load() >= maxAbandoned {
		j.call.recycle()
		return nil, fmt.Errorf("%w: %d timed-out calls still wait for Redis", ErrCircuitOpen, maxAbandoned)
	}
	// One context ends at the deadline for both sides: the caller stops
	// waiting when it ends, and the worker's send passes it to go-redis,
	// so that pool waits and dials end there too (socket reads ignore it
	// on the clients that come here). Once the caller gave up, it has
	// ended, so cancelling it changes nothing for the worker.
	ctx, cancel := context.WithDeadline(j.ctx, j.call.deadline)
	defer cancel()
	j.ctx = ctx
	dispatch(j)
	reply, err, gaveUp := j.call.await(ctx.Done(), nil)
	if gaveUp {
		// The worker finishes on its own and drops the call.
		j.abandoned.Add(1)
	}
	return reply, err
}

// Call states, for call.state.
const (
	callQueued    int32 = iota // waiting in a queue, not sent
	callSent                   // being sent
	callFinished               // its outcome is set, for the caller to read
	callAbandoned              // the caller stopped waiting
)

// A call is a request whose caller waits for another goroutine to send
// it: a worker, for clients that do not bound socket reads by a context's
// deadline (where the call may stand for a whole pipeline, the job's
// batch), or the sender of a batch. The caller stops waiting at its
// deadline while the other goroutine finishes, bounded by go-redis's own
// dial, pool and socket timeouts. The two agree through state on who owns
// the call once it is over: the caller when it finished in time (it reads
// the outcome and recycles the call), the sender when the caller gave up
// (it drops the outcome and the call). A call that the caller gave up on
// before it was sent is never sent. A call is referenced by those two
// alone, never by go-redis, so recycling it is safe.
type call struct {
	request
	state    atomic.Int32  // callQueued, callSent, callFinished or callAbandoned
	ready    chan struct{} // receives one value when the call finishes in time
	timer    *time.Timer   // the caller's deadline; only the caller reads it
	deadline time.Time
	reply    any
	err      error
}

var callPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &call{ready: make(chan struct{}, 1), timer: t}
}}

func newCall(r request, deadline time.Time, state int32) *call {
	c := callPool.Get().(*call)
	c.request, c.deadline = r, deadline
	c.state.Store(state)
	return c
}

// recycle returns c, finished and read, to callPool.
func (c *call) recycle() {
	c.timer.Stop()
	c.request, c.reply, c.err = request{}, nil, nil
	callPool.Put(c)
}

// finish hands the outcome, already set, to the waiting caller, and
// reports whether the caller was still waiting.
func (c *call) finish() bool {
	if c.state.CompareAndSwap(callSent, callFinished) {
		c.ready <- struct{}{}
		return true
	}
	return false
}

// wait waits for c until its deadline or ctx's end, and returns its
// outcome, or context.DeadlineExceeded when the caller gave up; the
// caller then no longer owns c. A call given up on before it was sent is
// never sent.
func (c *call) wait(ctx context.Context) (reply any, err error, gaveUp bool) {
	c.timer.Reset(time.Until(c.deadline))
	return c.await(ctx.Done(), c.timer.C)
}

// await is wait until done is closed or timeout receives, whichever
// comes first: done is a context's, and timeout, when not nil, c.timer's.
func (c *call) await(done <-chan struct{}, timeout <-chan time.Time) (reply any, err error, gaveUp bool) {
	select {
	case <-c.ready:
	case <-timeout:
		gaveUp = true
	case <-done:
		gaveUp = true
	}
	if gaveUp {
		if c.state.CompareAndSwap(callQueued, callAbandoned) || c.state.CompareAndSwap(callSent, callAbandoned) {
			return nil, context.DeadlineExceeded, true
		}
		<-c.ready // it finished meanwhile: the outcome is on its way
	}
	reply, err = c.reply, c.err
	c.recycle()
	return reply, err, false
}

// A job is a call for a worker to send, and what sending it needs.
type job struct {
	call      *call
	ctx       context.Context // the caller's, ending at the call's deadline
	client    redis.Scripter
	abandoned *atomic.Int32 // what a late finish lowers
	// What is sent instead of the call's request, when not nil: batch,
	// together; or do, whose error is the call's.
	batch []*call
	do    func(context.Context) error
}

// run sends j's call on a worker and hands the outcome to the waiting
// caller, or, if the caller gave up, drops it.
func (j job) run() {
	c := j.call
	if !c.state.CompareAndSwap(callQueued, callSent) {
		// The caller gave up before the worker came to it: never sent.
		j.abandoned.Add(-1)
		return
	}
	ctx := j.ctx // ends at the call's deadline (see onWorker)
	switch {
	case j.do != nil:
		c.err = j.do(ctx)
	case j.batch != nil:
		sendAll(ctx, j.client, j.batch)
	default:
		c.reply, c.err = send(ctx, j.client, &c.request)
	}
	if !c.finish() {
		j.abandoned.Add(-1)
	}
}

// workCh hands jobs to idle workers.
var workCh = make(chan job)

// dispatch runs j on an idle worker, or on a new one.
func dispatch(j job) {
	select {
	case workCh <- j:
	default:
		go worker(j)
	}
}

// worker runs jobs until none has come for workerIdle. Workers are shared
// by every Limiter and end by themselves, so none outlives its last job by
// more than workerIdle.
func worker(j job) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		j.run()
		j = job{} // holds nothing of the caller's while idle
		idle.Reset(workerIdle)
		select {
		case j = <-workCh:
		case <-idle.C:
			return
		}
	}
}
