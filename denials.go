package redislimit

import "time"

// denials remembers, per key, the last denial Redis gave, so that calls
// that Redis would deny as well are answered in process until the denial
// ends. It only ever denies: a call it cannot answer for sure goes to
// Redis. Its methods are safe for concurrent use.
type denials struct {
	keyStore[denial]
}

// denial is Redis's answer to a denied call of cost n, sent at sentAt, with
// its times in µs of the limiter's clock.
type denial struct {
	n         int
	remaining int
	sentAt    int64
	retryAt   int64 // sentAt + RetryAfter: no earlier than a call of cost n can succeed
	resetAt   int64 // sentAt + ResetAfter
}

// ExpiresAt implements expirer: past retryAt the denial says nothing.
func (d denial) ExpiresAt() int64 { return d.retryAt }

func newDenials(maxKeys int) *denials {
	d := &denials{}
	d.init(maxKeys)
	return d
}

// lookup returns the answer to a call of cost n on key at now (µs) when
// a denial holds it for sure: Redis denied a cost no larger than n, and its
// RetryAfter, counted from when that call was sent, has not passed. A
// smaller cost may fit sooner, and a clock that went back says nothing, so
// both go to Redis. The answer is the denial aged: the same Remaining, and
// RetryAfter and ResetAfter less the time passed.
func (d *denials) lookup(key string, n int, now int64) (Result, bool) {
	sh := d.shard(key)
	e, ok := sh.m[key]
	if ok && now >= e.retryAt {
		delete(sh.m, key)
		ok = false
	}
	sh.mu.Unlock()
	if !ok || n < e.n || now < e.sentAt {
		return Result{}, false
	}
	return Result{
		Remaining:  e.remaining,
		RetryAfter: micros(e.retryAt - now),
		ResetAfter: micros(max(e.resetAt-now, 0)),
	}, true
}

// record keeps Redis's answer r to a call of cost n on key sent at sentAt
// (µs): a denial replaces what was known of key, and an admission drops it.
func (d *denials) record(key string, n int, sentAt int64, r Result) {
	if r.Allowed {
		sh := d.shard(key)
		if _, ok := sh.m[key]; ok {
			delete(sh.m, key)
		}
		sh.mu.Unlock()
		return
	}
	e := denial{
		n:         n,
		remaining: r.Remaining,
		sentAt:    sentAt,
		retryAt:   sentAt + r.RetryAfter.Microseconds(),
		resetAt:   sentAt + r.ResetAfter.Microseconds(),
	}
	if e.retryAt <= sentAt {
		return
	}
	sh := d.shard(key)
	sh.put(key, e, sentAt, d.shardMax)
	sh.mu.Unlock()
}

// clock returns the limiter's time: its [WithClock] function, or the
// local clock when scripts read Redis's.
func (l *Limiter) clock() time.Time {
	if l.now != nil {
		return l.now()
	}
	return time.Now()
}
