package redislimit

import "time"

// Circuit breaker and call bounds, for tests.
const (
	BreakerThreshold = breakerThreshold
	BreakerCooldown  = breakerCooldown
	MaxAbandoned     = maxAbandoned
)

// SetBreaker changes l's circuit breaker: it opens after threshold
// consecutive failures, for cooldown.
func SetBreaker(l *Limiter, threshold int, cooldown time.Duration) {
	l.sender.breaker.threshold = int32(threshold)
	l.sender.breaker.cooldown = cooldown
}

// Abandoned returns how many of l's timed-out calls still wait for Redis.
func Abandoned(l *Limiter) int { return int(l.sender.abandoned.Load()) }

// LocalKeys returns how many keys l keeps in process memory.
func LocalKeys(l *Limiter) int { return l.local.len() }
