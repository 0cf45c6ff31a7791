package redislimit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Wait blocks until one call on key is allowed, and consumes it. It is
// WaitN(ctx, key, 1).
func (l *Limiter) Wait(ctx context.Context, key string) error {
	return l.WaitN(ctx, key, 1)
}

// WaitN blocks until a call of cost n on key is allowed, and consumes n
// units, as [Limiter.AllowN] would once it is allowed: for workers that
// throttle their own calls to a shared resource across a fleet. It
// returns nil once the call is admitted.
//
// When ctx has a deadline before the earliest moment the call could be
// admitted (its RetryAfter), WaitN returns at once with an error that
// matches [context.DeadlineExceeded], without waiting; a ctx that ends
// while WaitN sleeps returns its error. Bad input returns the errors of
// AllowN ([ErrCostExceedsLimit] for a cost that could never be admitted).
// When Redis fails, the failure policy decides: [FailOpen] admits (WaitN
// returns nil), [FailError] and [FailClosed] return the error at once,
// and [FailLocal] waits on the in-process decision.
//
// Waiters on one key in one process take turns: only the first asks
// Redis, sleeping until the RetryAfter it was given, so that a unit
// freeing up wakes one call, not a stampede; the others wait behind it
// and go in order. Waiters in other processes sleep RetryAfter plus up to
// a tenth of it at random, which spreads their calls. Sleeps are in real
// time.
func (l *Limiter) WaitN(ctx context.Context, key string, n int) error {
	if err := l.built(); err != nil {
		return err
	}
	release, err := l.turns.acquire(ctx, key)
	if err != nil {
		return l.wrap(err)
	}
	defer release()
	var timer *time.Timer
	for {
		o := l.decide(ctx, key, n, true)
		r := o.res
		switch {
		case o.err != nil:
			return o.err
		case r.Allowed:
			return nil
		case r.Degraded && l.policy != FailLocal:
			return o.covered
		}
		wait := max(r.RetryAfter, time.Millisecond)
		wait += time.Duration(rand.Int64N(int64(wait)/10 + 1))
		if d, ok := ctx.Deadline(); ok && time.Until(d) < r.RetryAfter {
			return fmt.Errorf("redislimit: %s: wait of %v for a cost of %d would pass the context's deadline: %w", l.title, r.RetryAfter, n, context.DeadlineExceeded)
		}
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			return l.wrap(ctx.Err())
		}
	}
}

// turns lets the waiters on one key in this process go one at a time. Its
// methods are safe for concurrent use; its zero value is ready.
type turns struct {
	mu sync.Mutex
	m  map[string]*turn // keys with a waiter; guarded by mu
}

// A turn is one key's queue of waiters: a token passed from one to the
// next.
type turn struct {
	token   chan struct{} // holds the token while no waiter has it
	waiters int           // guarded by turns.mu
}

// acquire waits for key's turn until ctx ends, and returns the function
// that passes it on.
func (t *turns) acquire(ctx context.Context, key string) (release func(), err error) {
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[string]*turn)
	}
	tu := t.m[key]
	if tu == nil {
		tu = &turn{token: make(chan struct{}, 1)}
		tu.token <- struct{}{}
		t.m[key] = tu
	}
	tu.waiters++
	t.mu.Unlock()
	leave := func() {
		t.mu.Lock()
		if tu.waiters--; tu.waiters == 0 {
			delete(t.m, key)
		}
		t.mu.Unlock()
	}
	select {
	case <-tu.token:
		return func() {
			tu.token <- struct{}{}
			leave()
		}, nil
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
}
