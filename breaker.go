package redislimit

import (
	"errors"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// breaker is a circuit breaker: after threshold consecutive failures, when
// no call has succeeded since the last of them started, it is open for
// cooldown, during which calls are refused without touching the network;
// then one probe is let through, and its outcome closes the breaker or
// opens it again. The second condition keeps a busy process, whose calls
// time out while waiting for its own CPU or connection pool even as Redis
// answers others, from shutting itself off. Its methods are safe for
// concurrent use. It reads no clock: every method takes the time it
// needs.
type breaker struct {
	threshold int32
	cooldown  time.Duration

	failures  atomic.Int32 // consecutive
	lastOK    atomic.Int64 // Unix ns of the last success
	openUntil atomic.Int64 // Unix ns; 0 when closed
	probing   atomic.Bool  // a probe is in flight
}

// allow reports whether a call may go to Redis at now, and whether it is
// the probe of a half-open breaker.
func (b *breaker) allow(now time.Time) (ok, probe bool) {
	until := b.openUntil.Load()
	if until == 0 {
		return true, false
	}
	if now.UnixNano() < until {
		return false, false
	}
	if b.probing.CompareAndSwap(false, true) {
		return true, true
	}
	return false, false
}

// success records a call that Redis answered, at now.
func (b *breaker) success(now time.Time) {
	// At most one store a millisecond, so that busy limiters do not fight
	// over the cache line.
	if ns := now.UnixNano(); ns-b.lastOK.Load() > int64(time.Millisecond) {
		b.lastOK.Store(ns)
	}
	if b.failures.Load() != 0 {
		b.failures.Store(0)
	}
	if b.openUntil.Load() != 0 {
		b.openUntil.Store(0)
		b.probing.Store(false)
	}
}

// failure records a call, started at start, that Redis did not answer, as
// of now.
func (b *breaker) failure(probe bool, start, now time.Time) {
	if n := b.failures.Add(1); probe || n >= b.threshold && b.lastOK.Load() < start.UnixNano() {
		b.openUntil.Store(now.Add(b.cooldown).UnixNano())
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
