package redislimit

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/redis/go-redis/v9"
)

// A batcher batches the calls that limiters sharing one client make at
// the same time, in one lane per Redis node, so that a slow node delays
// only its own calls. A call that finds fewer than maxInflight sends in
// flight in its lane is sent at once, alone; a call that finds them all
// busy joins the lane's queue, and the first send to end takes up to
// maxBatch queued calls and sends them as one pipeline, then the next,
// until the queue is empty. So a lone caller never waits for a batch, and
// under load each round trip carries every call that arrived during the
// last.
type batcher struct {
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
	b        *batcher
	inflight int     // sends in flight, alone or batched; guarded by b.mu
	queue    []*call // guarded by b.mu
}

// maxInflight is how many sends of one lane may be in flight at once
// before calls queue for the next batch. One gives the largest batches:
// on a machine shared with Redis, or any where CPU is the limit, fewer
// round trips decide more calls per second (measured against 2, 4 and 8).
var maxInflight = 1

// maxLanes bounds the lanes a batcher keeps; idle lanes of nodes that
// left the cluster are dropped past it.
const maxLanes = 256

// lane returns the lane of node. b.mu must be held.
func (b *batcher) lane(node any) *lane {
	if node == nil {
		return &b.one
	}
	ln := b.lanes[node]
	if ln == nil {
		if len(b.lanes) >= maxLanes {
			for k, v := range b.lanes {
				if v.inflight == 0 {
					delete(b.lanes, k)
				}
			}
		}
		ln = &lane{b: b}
		b.lanes[node] = ln
	}
	return ln
}

// enqueue takes a slot in the lane of r's node for a send that starts now
// and returns the lane alone, or, when every slot is busy, queues a call
// of r for a batch and returns it too.
func (b *batcher) enqueue(r request, deadline time.Time) (*lane, *call) {
	var node any
	if b.node != nil && b.routed.Load() {
		node = b.node(r.line[3].(string))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	ln := b.lane(node)
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
	b := ln.b
	b.mu.Lock()
	if len(ln.queue) == 0 {
		ln.inflight--
		b.mu.Unlock()
		return
	}
	batch := ln.take()
	b.mu.Unlock()
	go ln.flush(batch)
}

// take removes up to maxBatch calls from the queue. b.mu must be held.
func (ln *lane) take() []*call {
	n := min(len(ln.queue), ln.b.maxBatch)
	batch := slices.Clone(ln.queue[:n])
	rest := copy(ln.queue, ln.queue[n:])
	clear(ln.queue[rest:])
	ln.queue = ln.queue[:rest]
	return batch
}

// flush sends batch, then the batches queued meanwhile, and frees its slot
// when the queue is empty.
func (ln *lane) flush(batch []*call) {
	b := ln.b
	for {
		if handedOn := b.sendQueued(batch, ln); handedOn {
			return
		}
		b.mu.Lock()
		if len(ln.queue) == 0 {
			ln.inflight--
			b.mu.Unlock()
			return
		}
		batch = ln.take()
		b.mu.Unlock()
	}
}

// sendQueued sends the calls of batch whose callers still wait, in one
// pipeline bounded by the latest of their deadlines, and hands each caller
// its outcome. On a client that does not bound socket reads by a context's
// deadline, a stalled node could keep the pipeline waiting for go-redis's
// read timeout, long after every caller gave up: at the last deadline the
// slot is handed on (handedOn is then true), so that calls to other nodes
// do not queue behind it, and the send finishes alone.
func (b *batcher) sendQueued(batch []*call, ln *lane) (handedOn bool) {
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
	if !b.inline && b.stalled.Load() >= maxAbandoned {
		err := fmt.Errorf("%w: %d timed-out batches still wait for Redis", ErrCircuitOpen, maxAbandoned)
		for _, c := range live {
			c.err = err
			c.finish()
		}
		return false
	}
	var claimed atomic.Bool // by the send when it ends in time, else by the watchdog
	var watchdog *time.Timer
	if !b.inline {
		watchdog = time.AfterFunc(time.Until(deadline), func() {
			if claimed.CompareAndSwap(false, true) {
				b.stalled.Add(1)
				ln.release()
			}
		})
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	sendBatch(ctx, b.pipe, live)
	cancel()
	for _, c := range live {
		c.finish()
	}
	if watchdog == nil {
		return false
	}
	if !claimed.CompareAndSwap(false, true) {
		b.stalled.Add(-1)
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

// batcherKey identifies the shared batcher of a client and a batch bound.
type batcherKey struct {
	client   any // a weak pointer to the client
	maxBatch int
}

// batchers holds the batcher of every client and batch bound in use,
// weakly: a batcher lives as long as a Limiter uses it, and neither the
// map nor the batcher keeps a client alive.
var batchers struct {
	mu sync.Mutex
	m  map[batcherKey]weak.Pointer[batcher]
}

// sharedBatcher returns the batcher of the calls of every Limiter on
// client with the same batch bound, or nil when client's calls are not
// batched: maxBatch below 2, or a client other than *redis.Client,
// *redis.ClusterClient and *redis.Ring (go-redis's AutoPipeliner batches
// by itself). inline says whether client bounds socket reads by a
// context's deadline ([honoursDeadlines]).
func sharedBatcher(client redis.Scripter, maxBatch int, inline bool) *batcher {
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
	k := batcherKey{id, maxBatch}
	batchers.mu.Lock()
	defer batchers.mu.Unlock()
	if b := batchers.m[k].Value(); b != nil {
		return b
	}
	b := &batcher{pipe: client.(pipeliner), maxBatch: maxBatch, inline: inline}
	b.one.b = b
	switch c := client.(type) {
	case *redis.ClusterClient:
		b.node = func(key string) any {
			// A cancelled context: the slot map is read as it is, never
			// loaded here, on the caller's time.
			if m, err := c.MasterForKey(cancelled, key); err == nil {
				return m
			}
			return nil
		}
	case *redis.Ring:
		b.node = func(key string) any {
			if s, err := c.GetShardClientForKey(key); err == nil {
				return s
			}
			return nil
		}
	}
	if b.node != nil {
		b.lanes = make(map[any]*lane)
	}
	if batchers.m == nil {
		batchers.m = make(map[batcherKey]weak.Pointer[batcher])
	}
	batchers.m[k] = weak.Make(b)
	runtime.AddCleanup(b, func(k batcherKey) {
		batchers.mu.Lock()
		defer batchers.mu.Unlock()
		if batchers.m[k].Value() == nil {
			delete(batchers.m, k)
		}
	}, k)
	return b
}
