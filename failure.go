package redislimit

import (
	"errors"
	"fmt"
	"time"
)

// FailurePolicy says what a [Limiter] decides when Redis fails: a
// connection error, a timeout ([ErrTimeout]), an open circuit
// ([ErrCircuitOpen]), an error reply or a malformed reply. It never applies
// to bad input ([ErrEmptyKey], [ErrInvalidCost], [ErrCostExceedsLimit], …)
// nor to a caller's context that ended: those errors are always returned.
// The zero value is [FailError].
type FailurePolicy int

const (
	// FailError returns the error with the zero [Result], and the caller
	// decides. It is the default.
	FailError FailurePolicy = iota
	// FailOpen allows the call: Allowed and Degraded are true, Remaining is
	// the limit, and the error is only passed to [WithOnError].
	FailOpen
	// FailClosed denies the call: Allowed is false, Degraded true, Remaining
	// 0, and RetryAfter and ResetAfter the circuit breaker's cool-down
	// (500ms), after which Redis is tried again.
	FailClosed
	// FailLocal decides with an in-process limiter running the same
	// algorithm in this process's memory, with the capacity divided by
	// [WithLocalInstances]. Degraded is true. The algorithm must implement
	// [LocalAlgorithm] (the package's own do), or [New] returns an error
	// wrapping [ErrInvalidConfig]. Local state starts empty: what was
	// consumed in Redis before the failure is not known locally.
	FailLocal
)

// String returns the policy's name, such as "FailOpen".
func (p FailurePolicy) String() string {
	switch p {
	case FailError:
		return "FailError"
	case FailOpen:
		return "FailOpen"
	case FailClosed:
		return "FailClosed"
	case FailLocal:
		return "FailLocal"
	}
	return fmt.Sprintf("FailurePolicy(%d)", int(p))
}

// Errors that come from Redis or its reply, wrapped with the algorithm's
// name (a [Cache]'s with its operation); match them with [errors.Is]. Any other error from Redis (a
// connection refused, an error reply) is returned wrapped the same way.
var (
	// ErrTimeout is returned, wrapping the underlying error if there is one,
	// when Redis did not answer a call within the limiter's timeout
	// ([WithTimeout]), or a [Cache]'s ([WithCacheTimeout]).
	ErrTimeout = errors.New("redislimit: redis call timed out")
	// ErrCircuitOpen is returned when the limiter did not call Redis at all:
	// its circuit breaker is open, or too many timed-out calls are still
	// waiting for Redis to answer (see [WithTimeout]). The breaker opens
	// after 5 failed calls in a row with no call succeeding since the
	// last of them started, and stays open for 500ms; then one probe call
	// goes to Redis, and its success closes the breaker (its failure
	// opens it again). Redis answering about one call (an error reply
	// such as WRONGTYPE, a malformed reply) does not count as a failure. A [Cache]
	// returns it, without calling Redis, while too many of its calls are
	// still waiting.
	ErrCircuitOpen = errors.New("redislimit: circuit open, redis not called")
	// ErrMalformedReply is returned, wrapped with a description, when a
	// script's reply breaks the contract of [Algorithm.Body]: Redis
	// answered, but not with a decision.
	ErrMalformedReply = errors.New("redislimit: malformed script reply")
)

const (
	// DefaultTimeout is how long a decision may wait for Redis unless
	// [WithTimeout] sets another duration: far below go-redis's own 3s read
	// and 5s dial timeouts, yet above the latency spikes of a busy process
	// (hundreds of goroutines deciding at once, a garbage collection, the
	// first calls dialing their connections), which are not outages.
	DefaultTimeout = 500 * time.Millisecond

	// breakerThreshold is how many calls in a row must fail for the circuit
	// breaker to open.
	breakerThreshold = 5
	// breakerCooldown is how long the breaker stays open before it lets one
	// probe call through.
	breakerCooldown = 500 * time.Millisecond
	// maxAbandoned is how many calls that timed out may still be waiting
	// for Redis, per limiter, before new calls go straight to the policy.
	maxAbandoned = 128
	// workerIdle is how long an idle call worker waits for work before it
	// ends.
	workerIdle = 500 * time.Millisecond
)
