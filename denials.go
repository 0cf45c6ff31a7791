package redislimit

import (
	"slices"
	"sync/atomic"
	"time"
)

// denials remembers, per key, the last denial Redis gave, so that calls
// that Redis would deny as well are answered in process until the denial
// ends. It only ever denies: a call it cannot answer for sure goes to
// Redis. Its methods are safe for concurrent use.
type denials struct {
	keyStore[denial]
	// A decision whose flight overlaps a Reset of this limiter must not
	// record what it saw: its answer may predate the Reset. epoch moves at
	// the start and at the end of every Reset, and resets counts those in
	// progress.
	resets atomic.Int32
	epoch  atomic.Uint64
}

// noRecord is the epoch of a decision that must not be recorded.
const noRecord = ^uint64(0)

// denial is Redis's answer to a denied call of cost n, sent at sentAt, with
// its times in µs of the limiter's clock.
type denial struct {
	params    any // the identity of the parameters that denied (a Limiter's params)
	n         int
	remaining int
	sentAt    int64
	retryAt   int64 // sentAt + RetryAfter: no earlier than a call of cost n can succeed
	resetAt   int64 // sentAt + ResetAfter
	// For All: the parts' results, and when the first denying part could
	// admit the call, past which the parts' answer is no longer sure.
	parts   []Result
	partsAt int64
}

// ExpiresAt implements expirer: past retryAt the denial says nothing, nor
// past partsAt what its parts say.
func (d denial) ExpiresAt() int64 {
	if d.parts != nil {
		return min(d.retryAt, d.partsAt)
	}
	return d.retryAt
}

func newDenials(maxKeys int) *denials {
	d := &denials{}
	d.init(maxKeys)
	return d
}

// lookup returns the answer to a call of cost n on key at now (µs) with
// the parameters params, when a denial holds it for sure: Redis denied a
// cost no larger than n under the same parameters, and its
// RetryAfter, counted from when that call was sent, has not passed. A
// smaller cost may fit sooner, and a clock that went back says nothing, so
// both go to Redis. The answer is the denial aged: the same Remaining, and
// RetryAfter and ResetAfter less the time passed.
func (d *denials) lookup(key string, params any, n int, now int64) (Result, bool) {
	sh := d.shard(key)
	e, ok := sh.m[key]
	if ok && now >= e.ExpiresAt() {
		delete(sh.m, key)
		ok = false
	}
	sh.mu.Unlock()
	if !ok || e.params != params || n < e.n || now < e.sentAt || e.parts != nil && n != e.n {
		// A larger cost changes what All's parts would say.
		return Result{}, false
	}
	r := Result{
		Remaining:  e.remaining,
		RetryAfter: micros(e.retryAt - now),
		ResetAfter: micros(max(e.resetAt-now, 0)),
	}
	if e.parts != nil {
		elapsed := micros(now - e.sentAt)
		r.Parts = make([]Result, len(e.parts))
		for i, p := range e.parts {
			if !p.Allowed {
				p.RetryAfter -= elapsed
			}
			p.ResetAfter = max(p.ResetAfter-elapsed, 0)
			r.Parts[i] = p
		}
	}
	return r, true
}

// stamp returns the epoch to pass to record for a call sent now.
func (d *denials) stamp() uint64 {
	if d.resets.Load() != 0 {
		return noRecord
	}
	return d.epoch.Load()
}

// beginReset clears key before a Reset's call to Redis; endReset follows
// it. Decisions in flight meanwhile record nothing.
func (d *denials) beginReset(key string) {
	d.resets.Add(1)
	d.epoch.Add(1)
	d.delete(key)
}

func (d *denials) endReset() {
	d.epoch.Add(1)
	d.resets.Add(-1)
}

// record keeps Redis's answer r to a call of cost n on key with the
// parameters params, sent at sentAt (µs) in the given epoch: a denial
// replaces what was known of key, and an admission drops it. A denial seen
// across a Reset is not kept.
func (d *denials) record(key string, params any, n int, sentAt int64, epoch uint64, r Result) {
	if r.Allowed {
		sh := d.shard(key)
		if _, ok := sh.m[key]; ok {
			delete(sh.m, key)
		}
		sh.mu.Unlock()
		return
	}
	e := denial{
		params:    params,
		n:         n,
		remaining: r.Remaining,
		sentAt:    sentAt,
		retryAt:   sentAt + r.RetryAfter.Microseconds(),
		resetAt:   sentAt + r.ResetAfter.Microseconds(),
	}
	if r.Parts != nil {
		e.parts, e.partsAt = slices.Clone(r.Parts), e.retryAt
		for _, p := range r.Parts {
			if !p.Allowed {
				e.partsAt = min(e.partsAt, sentAt+p.RetryAfter.Microseconds())
			}
		}
	}
	if e.retryAt <= sentAt || epoch == noRecord || d.resets.Load() != 0 || d.epoch.Load() != epoch {
		return
	}
	sh := d.shard(key)
	sh.put(key, e, sentAt, d.shardMax)
	sh.mu.Unlock()
}

// monoBase is where monoMicros counts from.
var monoBase = time.Now()

// monoMicros returns the monotonic clock in µs: the deny cache's time when
// scripts read Redis's, so that a step of the wall clock cannot stretch a
// denial.
func monoMicros() int64 { return int64(time.Since(monoBase) / time.Microsecond) }

// stamp returns the sendStamp of a decision about to be sent.
func (l *Limiter) stamp() sendStamp {
	at := sendStamp{now: l.sendTime(), epoch: noRecord}
	if l.denials != nil {
		at.epoch = l.denials.stamp()
	}
	return at
}

// sendTime returns the time of a decision about to be sent, in µs: the
// [WithClock] time passed to the script, or the deny cache's clock; 0 when
// neither is in use.
func (l *Limiter) sendTime() int64 {
	switch {
	case l.now != nil:
		return l.now().UnixMicro()
	case l.denials != nil:
		return monoMicros()
	}
	return 0
}
