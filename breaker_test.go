package redislimit

import (
	"testing"
	"time"
)

// epochBreaker is the fake time the breaker tests start at.
var epochBreaker = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// breakerAt returns the fake time d after epochBreaker.
func breakerAt(d time.Duration) time.Time { return epochBreaker.Add(d) }

func newTestBreaker() *breaker {
	return &breaker{threshold: 3, cooldown: time.Second}
}

// failBreaker records n failures of calls started at start, as of now.
func failBreaker(b *breaker, n int, start, now time.Time) {
	for range n {
		b.failure(false, start, now)
	}
}

// wantBreakerAllow checks what b.allow says at now.
func wantBreakerAllow(t *testing.T, b *breaker, now time.Duration, wantOK, wantProbe bool) {
	t.Helper()
	if ok, probe := b.allow(breakerAt(now)); ok != wantOK || probe != wantProbe {
		t.Fatalf("allow() at +%v = %v, %v; want %v, %v", now, ok, probe, wantOK, wantProbe)
	}
}

// openBreaker returns a breaker opened at +10ms by threshold failures, for a
// cooldown that ends at +1.01s.
func openBreaker(t *testing.T) *breaker {
	t.Helper()
	b := newTestBreaker()
	failBreaker(b, 3, breakerAt(0), breakerAt(10*time.Millisecond))
	wantBreakerAllow(t, b, 10*time.Millisecond, false, false)
	return b
}

func TestBreakerOpensAfterThreshold(t *testing.T) {
	b := newTestBreaker()
	failBreaker(b, 2, breakerAt(0), breakerAt(time.Millisecond))
	wantBreakerAllow(t, b, time.Millisecond, true, false)
	b.failure(false, breakerAt(0), breakerAt(time.Millisecond))
	wantBreakerAllow(t, b, time.Millisecond, false, false)
}

func TestBreakerCountsConsecutiveFailures(t *testing.T) {
	b := newTestBreaker()
	failBreaker(b, 2, breakerAt(0), breakerAt(time.Millisecond))
	b.success(breakerAt(2 * time.Millisecond))
	failBreaker(b, 2, breakerAt(3*time.Millisecond), breakerAt(4*time.Millisecond))
	wantBreakerAllow(t, b, 4*time.Millisecond, true, false)
}

func TestBreakerStaysClosedAfterSuccessSinceFailuresStarted(t *testing.T) {
	b := newTestBreaker()
	// Slow calls start at 0; one that started later succeeds at +5ms; the
	// slow ones then fail. Redis answered meanwhile: not an outage.
	b.success(breakerAt(5 * time.Millisecond))
	failBreaker(b, 10, breakerAt(0), breakerAt(20*time.Millisecond))
	wantBreakerAllow(t, b, 20*time.Millisecond, true, false)

	// Calls that start after that success and fail do open it.
	failBreaker(b, 3, breakerAt(30*time.Millisecond), breakerAt(40*time.Millisecond))
	wantBreakerAllow(t, b, 40*time.Millisecond, false, false)
}

func TestBreakerRefusesDuringCooldown(t *testing.T) {
	b := openBreaker(t)
	for _, now := range []time.Duration{10 * time.Millisecond, 500 * time.Millisecond, 1010*time.Millisecond - time.Nanosecond} {
		wantBreakerAllow(t, b, now, false, false)
	}
}

func TestBreakerLetsOneProbeAfterCooldown(t *testing.T) {
	b := openBreaker(t)
	wantBreakerAllow(t, b, 1010*time.Millisecond, true, true)
	wantBreakerAllow(t, b, 1010*time.Millisecond, false, false)
	wantBreakerAllow(t, b, 5*time.Second, false, false)
}

func TestBreakerProbeSuccessCloses(t *testing.T) {
	b := openBreaker(t)
	wantBreakerAllow(t, b, 2*time.Second, true, true)
	b.success(breakerAt(2 * time.Second))
	wantBreakerAllow(t, b, 2*time.Second, true, false)
	wantBreakerAllow(t, b, 2*time.Second, true, false)
	// Closed, it counts failures from zero again.
	failBreaker(b, 2, breakerAt(3*time.Second), breakerAt(3*time.Second))
	wantBreakerAllow(t, b, 3*time.Second, true, false)
}

func TestBreakerProbeFailureReopens(t *testing.T) {
	b := openBreaker(t)
	wantBreakerAllow(t, b, 2*time.Second, true, true)
	b.failure(true, breakerAt(2*time.Second), breakerAt(2500*time.Millisecond))
	wantBreakerAllow(t, b, 2500*time.Millisecond, false, false)
	wantBreakerAllow(t, b, 3500*time.Millisecond-time.Nanosecond, false, false)
	wantBreakerAllow(t, b, 3500*time.Millisecond, true, true)
}

func TestBreakerReleaseLetsAnotherProbe(t *testing.T) {
	b := openBreaker(t)
	wantBreakerAllow(t, b, 2*time.Second, true, true)
	b.release(false) // a call that was not the probe changes nothing
	wantBreakerAllow(t, b, 2*time.Second, false, false)
	b.release(true)
	wantBreakerAllow(t, b, 2*time.Second, true, true)
	wantBreakerAllow(t, b, 2*time.Second, false, false)
}
