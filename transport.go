package redislimit

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/redis/go-redis/v9"
)

// This file is the path of a script call from a prepared request to Redis
// and back: alone on the caller's goroutine, alone on a worker goroutine,
// or in a batch shared with other callers; the EVAL that answers NOSCRIPT;
// the at-most-once send; each caller's deadline. It receives ready
// requests (a program, a Redis key, the arguments) and never calls back
// into the Limiter.

// A program is a script the transport can run: its SHA-1 for EVALSHA and
// its source for the EVAL that answers NOSCRIPT.
type program struct {
	hash   string
	src    string
	script *redis.Script // for clients that cannot take a prepared command
}

// newProgram returns the program of s.
func newProgram(s *redis.Script) *program {
	var c srcCapture
	s.Eval(context.Background(), &c, nil)
	sum := sha1.Sum([]byte(c.src))
	return &program{hash: hex.EncodeToString(sum[:]), src: c.src, script: s}
}

// srcCapture is a [redis.Scripter] that records the source of the script
// it is asked to EVAL and sends nothing: the way to read a *redis.Script's
// source, which it does not export.
type srcCapture struct{ src string }

func (c *srcCapture) Eval(ctx context.Context, src string, _ []string, _ ...any) *redis.Cmd {
	c.src = src
	return redis.NewCmd(ctx)
}
func (c *srcCapture) EvalSha(ctx context.Context, _ string, _ []string, _ ...any) *redis.Cmd {
	return redis.NewCmd(ctx)
}
func (c *srcCapture) EvalRO(ctx context.Context, _ string, _ []string, _ ...any) *redis.Cmd {
	return redis.NewCmd(ctx)
}
func (c *srcCapture) EvalShaRO(ctx context.Context, _ string, _ []string, _ ...any) *redis.Cmd {
	return redis.NewCmd(ctx)
}
func (c *srcCapture) ScriptExists(ctx context.Context, _ ...string) *redis.BoolSliceCmd {
	return redis.NewBoolSliceCmd(ctx)
}
func (c *srcCapture) ScriptLoad(ctx context.Context, _ string) *redis.StringCmd {
	return redis.NewStringCmd(ctx)
}

// lineHead is how many values of a command line come before ARGV for a
// script on one key: EVALSHA, the SHA-1, the key count (1) and the key.
const lineHead = 4

// A request is one script call, ready to send.
type request struct {
	prog *program
	// line is the command line: lineHead values (filled in by the
	// transport) and then ARGV.
	line []any
}

// newRequest returns a request to run p on the Redis key rkey, with room
// for argc arguments, which the caller appends to line.
func newRequest(p *program, rkey string, argc int) request {
	line := make([]any, lineHead, lineHead+argc)
	line[0], line[1], line[2], line[3] = "evalsha", p.hash, 1, rkey
	return request{prog: p, line: line}
}

// newRequestKeys is newRequest for a script on several keys, all in the
// slot of the first.
func newRequestKeys(p *program, rkeys []string, argc int) request {
	line := make([]any, 3, 3+len(rkeys)+argc)
	line[0], line[1], line[2] = "evalsha", p.hash, len(rkeys)
	for _, k := range rkeys {
		line = append(line, k)
	}
	return request{prog: p, line: line}
}

// keys returns r's Redis keys.
func (r *request) keys() []string {
	n := r.line[2].(int)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = r.line[3+i].(string)
	}
	return keys
}

// cmd returns the EVALSHA command of r, or, when eval is set, the EVAL
// command that also loads the script into the node's cache. The command
// is never re-sent by go-redis (see onceCmd).
func (r *request) cmd(ctx context.Context, eval bool) *redis.Cmd {
	line := r.line
	if eval {
		line = slices.Clone(line)
		line[0], line[1] = "eval", r.prog.src
	}
	c := redis.NewCmd(ctx, line...)
	c.SetFirstKeyPos(3)
	return c
}

// onceCmd is a script call that go-redis must not send again after a
// failure. go-redis re-sends a command whose reply it did not get (a read
// timeout, a connection closed after the write), which would run a
// consuming script twice for one decision; a command whose NoRetry is true
// fails instead. Redirections (MOVED, ASK), which mean the script did not
// run, are still followed.
type onceCmd struct{ *redis.Cmd }

// NoRetry implements [redis.Cmder].
func (onceCmd) NoRetry() bool { return true }

// processor is a client that takes prepared commands: *redis.Client,
// *redis.ClusterClient, *redis.Ring and go-redis's AutoPipeliner.
type processor interface {
	Process(ctx context.Context, cmd redis.Cmder) error
}

// pipeliner is a client that can send many commands in one round trip per
// node.
type pipeliner interface {
	Pipeline() redis.Pipeliner
}

// isNoScript reports whether err is Redis's answer that it does not have
// the script: the script did not run.
func isNoScript(err error) bool {
	return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT")
}

// send runs r alone on c and returns its reply: EVALSHA, then EVAL when
// Redis does not have the script. On a client that cannot take prepared
// commands it falls back to [redis.Script.Run], which go-redis may re-send.
func send(ctx context.Context, c redis.Scripter, r *request) (any, error) {
	p, ok := c.(processor)
	if !ok {
		keys := r.keys()
		return r.prog.script.Run(ctx, c, keys, r.line[3+len(keys):]...).Result()
	}
	cmd := r.cmd(ctx, false)
	_ = p.Process(ctx, onceCmd{cmd})
	if isNoScript(cmd.Err()) {
		cmd = r.cmd(ctx, true)
		_ = p.Process(ctx, onceCmd{cmd})
	}
	return cmd.Result()
}

// sendBatch runs every call of batch in one pipeline on c, which go-redis
// splits into one round trip per node, and sets each call's outcome. The
// calls whose script Redis did not have are sent again, alone of them, as
// EVAL in a second pipeline.
func sendBatch(ctx context.Context, c pipeliner, batch []*call) {
	cmds := make([]*redis.Cmd, len(batch))
	pipe := c.Pipeline()
	for i, b := range batch {
		cmds[i] = b.cmd(ctx, false)
		_ = pipe.Process(ctx, onceCmd{cmds[i]})
	}
	_, _ = pipe.Exec(ctx)
	var again redis.Pipeliner
	for i, cmd := range cmds {
		if isNoScript(cmd.Err()) {
			if again == nil {
				again = c.Pipeline()
			}
			cmds[i] = batch[i].cmd(ctx, true)
			_ = again.Process(ctx, onceCmd{cmds[i]})
		}
	}
	if again != nil {
		_, _ = again.Exec(ctx)
	}
	for i, cmd := range cmds {
		batch[i].reply, batch[i].err = cmd.Result()
	}
}

// Call states, for call.state.
const (
	callQueued    int32 = iota // waiting in a transport's queue, not sent
	callSent                   // being sent
	callFinished               // its outcome is set, for the caller to read
	callAbandoned              // the caller stopped waiting
)

// A call is one request whose caller waits for another goroutine to send
// it: a worker, for clients that do not bound socket reads by a context's
// deadline, or the sender of a batch. The caller stops waiting at its
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

	// For a call sent alone on a worker:
	ctx    context.Context // the caller's
	client redis.Scripter
	l      *Limiter // whose abandoned count a late finish lowers
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
	c.ctx, c.client, c.l = nil, nil, nil
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
	select {
	case <-c.ready:
	case <-c.timer.C:
		gaveUp = true
	case <-ctx.Done():
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

// run sends c alone on a worker and hands the outcome to the waiting
// caller, or, if the caller gave up, drops it.
func (c *call) run() {
	l := c.l
	if !c.state.CompareAndSwap(callQueued, callSent) {
		// The caller gave up before the worker came to it: never sent.
		l.abandoned.Add(-1)
		return
	}
	// The deadline bounds go-redis's pool waits and dials, so that a call
	// is not sent long after its caller gave up; socket reads ignore it on
	// the clients that come here.
	ctx, cancel := context.WithDeadline(c.ctx, c.deadline)
	c.reply, c.err = send(ctx, c.client, &c.request)
	cancel()
	if !c.finish() {
		l.abandoned.Add(-1)
	}
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

// A transport batches the calls that limiters sharing one client make at
// the same time, in one lane per Redis node, so that a slow node delays
// only its own calls. A call that finds fewer than maxInflight sends in
// flight in its lane is sent at once, alone; a call that finds them all
// busy joins the lane's queue, and the first send to end takes up to
// maxBatch queued calls and sends them as one pipeline, then the next,
// until the queue is empty. So a lone caller never waits for a batch, and
// under load each round trip carries every call that arrived during the
// last.
type transport struct {
	pipe     pipeliner
	maxBatch int
	inline   bool         // the client bounds socket reads by context deadlines
	stalled  atomic.Int32 // batches sent past every caller's deadline, still waiting for Redis
	// node returns the node that owns a Redis key, or nil when it is not
	// known; nil for a client of one node.
	node func(key string) any
	// routed is set once a call succeeded, so that the client knows its
	// nodes: before, node is not asked, as a cluster client would try to
	// load its slot map on the caller's time.
	routed atomic.Bool

	mu    sync.Mutex
	one   lane          // the lane of a client of one node, or of unknown nodes
	lanes map[any]*lane // by node; guarded by mu
}

// A lane is the queue of the calls to one Redis node.
type lane struct {
	t        *transport
	inflight int     // sends in flight, alone or batched; guarded by t.mu
	queue    []*call // guarded by t.mu
}

// maxInflight is how many sends of one lane may be in flight at once
// before calls queue for the next batch. One gives the largest batches:
// on a machine shared with Redis, or any where CPU is the limit, fewer
// round trips decide more calls per second (measured against 2, 4 and 8).
var maxInflight = 1

// maxLanes bounds the lanes a transport keeps; idle lanes of nodes that
// left the cluster are dropped past it.
const maxLanes = 256

// lane returns the lane of the node that owns rkey. t.mu must be held.
func (t *transport) lane(node any) *lane {
	if node == nil {
		return &t.one
	}
	ln := t.lanes[node]
	if ln == nil {
		if len(t.lanes) >= maxLanes {
			for k, v := range t.lanes {
				if v.inflight == 0 {
					delete(t.lanes, k)
				}
			}
		}
		ln = &lane{t: t}
		t.lanes[node] = ln
	}
	return ln
}

// enqueue takes a slot in the lane of r's node for a send that starts now
// and returns the lane alone, or, when every slot is busy, queues a call
// of r for a batch and returns it too.
func (t *transport) enqueue(r request, deadline time.Time) (*lane, *call) {
	var node any
	if t.node != nil && t.routed.Load() {
		node = t.node(r.line[3].(string))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ln := t.lane(node)
	if ln.inflight < maxInflight {
		ln.inflight++
		return ln, nil
	}
	c := newCall(r, deadline, callQueued)
	ln.queue = append(ln.queue, c)
	return ln, c
}

// release frees the slot of a send that ended, or, when calls are
// queued, hands the slot to a batch of them.
func (ln *lane) release() {
	t := ln.t
	t.mu.Lock()
	if len(ln.queue) == 0 {
		ln.inflight--
		t.mu.Unlock()
		return
	}
	batch := ln.take()
	t.mu.Unlock()
	go ln.flush(batch)
}

// take removes up to maxBatch calls from the queue. t.mu must be held.
func (ln *lane) take() []*call {
	n := min(len(ln.queue), ln.t.maxBatch)
	batch := slices.Clone(ln.queue[:n])
	rest := copy(ln.queue, ln.queue[n:])
	clear(ln.queue[rest:])
	ln.queue = ln.queue[:rest]
	return batch
}

// flush sends batch, then the batches queued meanwhile, and frees its slot
// when the queue is empty.
func (ln *lane) flush(batch []*call) {
	t := ln.t
	for {
		if handedOn := t.sendQueued(batch, ln); handedOn {
			return
		}
		t.mu.Lock()
		if len(ln.queue) == 0 {
			ln.inflight--
			t.mu.Unlock()
			return
		}
		batch = ln.take()
		t.mu.Unlock()
	}
}

// sendQueued sends the calls of batch whose callers still wait, in one
// pipeline bounded by the latest of their deadlines, and hands each caller
// its outcome. On a client that does not bound socket reads by a context's
// deadline, a stalled node could keep the pipeline waiting for go-redis's
// read timeout, long after every caller gave up: at the last deadline the
// slot is handed on (handedOn is then true), so that calls to other nodes
// do not queue behind it, and the send finishes alone.
func (t *transport) sendQueued(batch []*call, ln *lane) (handedOn bool) {
	live := batch[:0]
	var deadline time.Time
	for _, c := range batch {
		if c.state.CompareAndSwap(callQueued, callSent) {
			live = append(live, c)
			if c.deadline.After(deadline) {
				deadline = c.deadline
			}
		}
	}
	if len(live) == 0 {
		return false
	}
	if !t.inline && t.stalled.Load() >= maxAbandoned {
		err := fmt.Errorf("%w: %d timed-out batches still wait for Redis", ErrCircuitOpen, maxAbandoned)
		for _, c := range live {
			c.err = err
			c.finish()
		}
		return false
	}
	var claimed atomic.Bool // by the send when it ends in time, else by the watchdog
	var watchdog *time.Timer
	if !t.inline {
		watchdog = time.AfterFunc(time.Until(deadline), func() {
			if claimed.CompareAndSwap(false, true) {
				t.stalled.Add(1)
				ln.release()
			}
		})
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	sendBatch(ctx, t.pipe, live)
	cancel()
	for _, c := range live {
		c.finish()
	}
	if watchdog == nil {
		return false
	}
	if !claimed.CompareAndSwap(false, true) {
		t.stalled.Add(-1)
		return true
	}
	watchdog.Stop()
	return false
}

// cancelled is a context that has ended.
var cancelled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// transportKey identifies the shared transport of a client and a batch
// bound.
type transportKey struct {
	client   any // a weak pointer to the client
	maxBatch int
}

// transports holds the transport of every client and batch bound in use,
// weakly: a transport lives as long as a Limiter uses it, and neither the
// map nor the transport keeps a client alive.
var transports struct {
	mu sync.Mutex
	m  map[transportKey]weak.Pointer[transport]
}

// sharedTransport returns the transport that batches the calls of every
// Limiter on client with the same batch bound, or nil when client's calls
// are not batched: maxBatch below 2, or a client other than
// *redis.Client, *redis.ClusterClient and *redis.Ring (go-redis's
// AutoPipeliner batches by itself).
func sharedTransport(client redis.Scripter, maxBatch int) *transport {
	if maxBatch < 2 {
		return nil
	}
	var id any
	switch c := client.(type) {
	case *redis.Client:
		id = weak.Make(c)
	case *redis.ClusterClient:
		id = weak.Make(c)
	case *redis.Ring:
		id = weak.Make(c)
	default:
		return nil
	}
	k := transportKey{id, maxBatch}
	transports.mu.Lock()
	defer transports.mu.Unlock()
	if t := transports.m[k].Value(); t != nil {
		return t
	}
	t := &transport{pipe: client.(pipeliner), maxBatch: maxBatch, inline: honoursDeadlines(client)}
	t.one.t = t
	switch c := client.(type) {
	case *redis.ClusterClient:
		t.node = func(key string) any {
			// A cancelled context: the slot map is read as it is, never
			// loaded here, on the caller's time.
			if m, err := c.MasterForKey(cancelled, key); err == nil {
				return m
			}
			return nil
		}
	case *redis.Ring:
		t.node = func(key string) any {
			if s, err := c.GetShardClientForKey(key); err == nil {
				return s
			}
			return nil
		}
	}
	if t.node != nil {
		t.lanes = make(map[any]*lane)
	}
	if transports.m == nil {
		transports.m = make(map[transportKey]weak.Pointer[transport])
	}
	transports.m[k] = weak.Make(t)
	runtime.AddCleanup(t, func(k transportKey) {
		transports.mu.Lock()
		defer transports.mu.Unlock()
		if transports.m[k].Value() == nil {
			delete(transports.m, k)
		}
	}, k)
	return t
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

// callRedis sends r within the limiter's timeout, and keeps the circuit
// breaker up to date. It returns the caller's context error when that
// context ended, an error wrapping [ErrCircuitOpen] or [ErrTimeout], or
// the script's reply and error.
func (l *Limiter) callRedis(ctx context.Context, r request) (any, error) {
	ok, probe := l.breaker.allow()
	if !ok {
		return nil, ErrCircuitOpen
	}
	start := time.Now()
	deadline := start.Add(l.timeout)
	var reply any
	var err error
	var ln *lane
	var queued *call
	if l.transport != nil {
		ln, queued = l.transport.enqueue(r, deadline)
	}
	if queued != nil {
		reply, err, _ = queued.wait(ctx)
	} else {
		reply, err = l.sendAlone(ctx, r, deadline, ln)
	}
	if err == nil {
		l.breaker.success()
		if t := l.transport; t != nil && t.node != nil && !t.routed.Load() {
			t.routed.Store(true)
		}
		return reply, nil
	}
	return nil, l.failed(ctx, err, probe, start)
}

// sendAlone sends r by itself, on the caller's goroutine when the client
// allows it, or else on a worker, and frees its slot in ln, if ln is not
// nil, once the caller stops waiting: a send that outlives its caller
// holds no slot.
func (l *Limiter) sendAlone(ctx context.Context, r request, deadline time.Time, ln *lane) (any, error) {
	if ln != nil {
		defer ln.release()
	}
	if l.inline {
		// The client bounds socket reads, dials and pool waits by the
		// context's deadline; a caller's earlier deadline wins.
		cctx := ctx
		if d, ok := ctx.Deadline(); !ok || d.After(deadline) {
			var cancel context.CancelFunc
			cctx, cancel = context.WithDeadline(ctx, deadline)
			defer cancel()
		}
		return send(cctx, l.client, &r)
	}
	if l.abandoned.Load() >= maxAbandoned {
		return nil, fmt.Errorf("%w: %d timed-out calls still wait for Redis", ErrCircuitOpen, maxAbandoned)
	}
	c := newCall(r, deadline, callQueued)
	c.ctx, c.client, c.l = ctx, l.client, l
	dispatch(c)
	reply, err, gaveUp := c.wait(ctx)
	if gaveUp {
		// The worker finishes on its own, bounded by go-redis's
		// timeouts, and drops the call.
		l.abandoned.Add(1)
	}
	return reply, err
}

// callRedisMany sends reqs together, in one pipeline when the client can
// pipeline (else one after another), within the limiter's timeout for the
// whole, and keeps the circuit breaker up to date. It returns each
// request's reply and error, or an error for the whole call as
// [Limiter.callRedis] does when none was answered in time.
func (l *Limiter) callRedisMany(ctx context.Context, reqs []request) ([]any, []error, error) {
	ok, probe := l.breaker.allow()
	if !ok {
		return nil, nil, ErrCircuitOpen
	}
	start := time.Now()
	deadline := start.Add(l.timeout)
	calls := make([]call, len(reqs))
	batch := make([]*call, len(reqs))
	for i := range reqs {
		calls[i].request = reqs[i]
		batch[i] = &calls[i]
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var err error
	if l.inline {
		sendAll(cctx, l.client, batch)
	} else if l.abandoned.Load() >= maxAbandoned {
		err = fmt.Errorf("%w: %d timed-out calls still wait for Redis", ErrCircuitOpen, maxAbandoned)
	} else {
		// The client does not bound socket reads by the deadline: send on
		// a goroutine of its own, which ends by itself, bounded by
		// go-redis's timeouts, if the caller stops waiting.
		done := make(chan struct{})
		go func() {
			sendAll(cctx, l.client, batch)
			close(done)
		}()
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			err = context.DeadlineExceeded
		case <-ctx.Done():
			err = context.DeadlineExceeded
		}
		if err != nil {
			l.abandoned.Add(1)
			go func() {
				<-done
				l.abandoned.Add(-1)
			}()
		}
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
			l.breaker.success()
			return replies, errs, nil
		case answered:
			// Some nodes answered: each key keeps its own outcome, and
			// one whose node ran out of time says so as Allow would.
			l.breaker.failure(probe, start.UnixNano())
			if !time.Now().Before(deadline) {
				for i, e := range errs {
					if e != nil && outage(e) {
						errs[i] = l.timedOut(e)
					}
				}
			}
			return replies, errs, nil
		}
		err = down // none answered: one failure for the whole call
	}
	return nil, nil, l.failed(ctx, err, probe, start)
}

// sendAll sends the calls of batch together on c: in one pipeline when c
// can pipeline, else one after another.
func sendAll(ctx context.Context, c redis.Scripter, batch []*call) {
	if p, ok := c.(pipeliner); ok {
		sendBatch(ctx, p, batch)
		return
	}
	for _, b := range batch {
		b.reply, b.err = send(ctx, c, &b.request)
	}
}

// failed updates the circuit breaker after a call, started at start, that
// ended with err, and returns the error to report: the caller's context
// error, an error wrapping [ErrTimeout] past the limiter's timeout, or err.
func (l *Limiter) failed(ctx context.Context, err error, probe bool, start time.Time) error {
	switch {
	case callerDone(ctx) != nil:
		l.breaker.release(probe)
		return callerDone(ctx)
	case !time.Now().Before(start.Add(l.timeout)):
		l.breaker.failure(probe, start.UnixNano())
		return l.timedOut(err)
	case outage(err):
		l.breaker.failure(probe, start.UnixNano())
	default:
		l.breaker.success()
	}
	return err
}

// timedOut returns err, from a call that ran out of the limiter's
// timeout, as an error wrapping [ErrTimeout].
func (l *Limiter) timedOut(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w after %v", ErrTimeout, l.timeout)
	}
	return fmt.Errorf("%w after %v: %w", ErrTimeout, l.timeout, err)
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
