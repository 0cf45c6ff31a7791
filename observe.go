package redislimit

import (
	"context"
	"errors"
	"time"
)

// Outcome is how a decision ended, for an [Observer].
type Outcome uint8

// Outcomes.
const (
	// Allowed: Redis (or the in-process limiter) admitted the call.
	Allowed Outcome = iota + 1
	// Denied: the call was denied, by Redis, the in-process limiter or
	// the deny cache.
	Denied
	// Degraded: Redis failed and the failure policy decided
	// ([Result.Degraded]), whether it admitted the call or not.
	Degraded
	// Failed: the call returned an error: bad input, a context that
	// ended, or a Redis failure that the policy returned.
	Failed
	// Shadowed: the limit denied the call and shadow mode
	// ([WithShadowMode]) admitted it ([Result.Shadowed]). A degraded
	// decision is reported as Degraded even when shadowed.
	Shadowed
)

// String returns "allowed", "denied", "degraded", "error" or "shadowed".
func (o Outcome) String() string {
	switch o {
	case Allowed:
		return "allowed"
	case Denied:
		return "denied"
	case Degraded:
		return "degraded"
	case Failed:
		return "error"
	case Shadowed:
		return "shadowed"
	}
	return "unknown"
}

// Observation describes one decision, for an [Observer]. It never holds
// the user's key.
type Observation struct {
	// Algorithm is the algorithm's Name ([Algorithm.Name]).
	Algorithm string
	// Outcome is how the decision ended.
	Outcome Outcome
	// Allowed reports whether the call was admitted (a Degraded decision
	// may be either).
	Allowed bool
	// Latency is how long the call took, from its start to its return;
	// for [Limiter.AllowMany], the whole call's.
	Latency time.Duration
	// RoundTrips is 1 when the decision went to Redis, alone or in a
	// batch, whether Redis answered or not (a refused connection counts),
	// and 0 when it was answered without trying Redis (the deny cache, an
	// open breaker, bad input, the in-process limiter). An EVAL that
	// follows a NOSCRIPT is not counted.
	RoundTrips int
	// DenyCacheHit reports that the deny cache ([WithDenyCache]) answered.
	DenyCacheHit bool
	// Leased reports that the call was admitted from units of a lease
	// ([WithLeases]) taken from Redis: RoundTrips is 1 for the call that
	// asked Redis for the lease, and 0 for the others, made in process
	// memory.
	Leased bool
}

// An Observer receives every decision of a Limiter: each call of Allow,
// AllowN and Peek, each key of AllowMany that was decided (an AllowMany
// that returns an error before deciding, for a bad key or an ended
// context, reports nothing), and each attempt of Wait. It
// runs on the calling goroutine before the call returns, so it should be
// quick; it may be called concurrently. Set with [WithObserver]; without
// one, decisions measure nothing.
type Observer func(ctx context.Context, o Observation)

// WithObserver sets f to receive every decision, for metrics. The
// extra/redislimitotel module adapts it to OpenTelemetry. The default is
// none, which costs nothing.
func WithObserver(f Observer) Option {
	return func(l *Limiter) { l.observe = f }
}

// source is where a decision came from.
type source uint8

const (
	fromNowhere   source = iota // bad input or an ended context
	fromLocal                   // NewLocal
	fromCache                   // the deny cache
	fromRedis                   // sent to Redis, or meant to be
	fromLease                   // a lease, taken by another call
	fromLeaseTake               // a lease that this call asked Redis for
)

// sent reports whether the decision o was sent to Redis: not when the
// open breaker answered.
func (o outcome) sent() bool {
	return (o.src == fromRedis || o.src == fromLeaseTake) && !errors.Is(o.covered, ErrCircuitOpen) && !errors.Is(o.err, ErrCircuitOpen)
}

// observed reports one decision to the observer; sent says whether it
// was sent to Redis.
func (l *Limiter) observed(ctx context.Context, start time.Time, src source, sent bool, r Result, err error) {
	o := Observation{Algorithm: l.name, Allowed: r.Allowed, Latency: time.Since(start), DenyCacheHit: src == fromCache}
	o.Leased = (src == fromLease || src == fromLeaseTake) && err == nil && r.Allowed && !r.Degraded
	switch {
	case err != nil:
		o.Outcome, o.Allowed = Failed, false
	case r.Degraded:
		o.Outcome = Degraded
	case r.Shadowed:
		o.Outcome = Shadowed
	case r.Allowed:
		o.Outcome = Allowed
	default:
		o.Outcome = Denied
	}
	if sent {
		o.RoundTrips = 1
	}
	l.observe(ctx, o)
}
