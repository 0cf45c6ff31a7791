package redislimit

import (
	_ "embed"
	"fmt"
	"time"
)

//go:embed scripts/tokenbucket.lua
var tokenBucketLua string

// TokenBucket returns an [Algorithm] with a bucket of burst tokens per key
// that starts full and refills continuously at rate tokens every per, never
// above burst. A call of cost n takes n tokens. Over any period t it admits
// at most burst + rate×t/per units.
//
// rate and burst must be at least 1, per at least a millisecond, and
// burst×per/rate at most [MaxWindow]; otherwise [New] returns an error
// wrapping [ErrInvalidConfig]. The refill interval per/rate is kept in
// whole µs, rounded up, so the bucket never refills faster than asked; a
// rate whose interval this would slow by more than 1% (above about 10,000
// tokens a second) is refused too. State per key: one integer.
func TokenBucket(rate int, per time.Duration, burst int) Algorithm {
	return tokenBucket{rate: rate, per: per, burst: burst}
}

type tokenBucket struct {
	rate  int
	per   time.Duration
	burst int
}

func (tokenBucket) Name() string  { return "tb" }
func (tokenBucket) title() string { return "TokenBucket" }
func (a tokenBucket) Limit() int  { return a.burst }
func (a tokenBucket) Window() time.Duration {
	return time.Duration(a.interval()*int64(a.burst)) * time.Microsecond
}
func (tokenBucket) Body() string { return tokenBucketLua }

func (a tokenBucket) Args() ([]any, error) {
	if err := checkUnits(a.title(), "rate", a.rate, maxUnits); err != nil {
		return nil, err
	}
	if err := checkUnits(a.title(), "burst", a.burst, maxUnits); err != nil {
		return nil, err
	}
	if err := checkSpan(a.title(), "per", a.per); err != nil {
		return nil, err
	}
	interval := a.interval()
	if per := a.per.Microseconds(); (interval*int64(a.rate)-per)*100 > per {
		return nil, fmt.Errorf("%w: token bucket: rate %d per %v needs a refill interval finer than whole µs", ErrInvalidConfig, a.rate, a.per)
	}
	if int64(a.burst) > int64(MaxWindow/time.Microsecond)/interval {
		return nil, fmt.Errorf("%w: token bucket: burst %d takes longer than MaxWindow to refill", ErrInvalidConfig, a.burst)
	}
	return []any{a.burst, interval}, nil
}

// interval returns the refill interval, per/rate in whole µs rounded up,
// so that the bucket never refills faster than configured. Args refuses
// rates where the rounding would slow the refill by more than 1%.
func (a tokenBucket) interval() int64 {
	per := a.per.Microseconds()
	return (per + int64(a.rate) - 1) / int64(a.rate)
}

// NewLocalState implements [LocalAlgorithm].
func (a tokenBucket) NewLocalState(instances int) LocalState {
	burst := localUnits(a.burst, instances)
	interval := a.interval()
	if maxInterval := int64(MaxWindow/time.Microsecond) / burst; interval > maxInterval/int64(instances) {
		interval = maxInterval
	} else {
		interval *= int64(instances)
	}
	return &tokenBucketState{burst: burst, interval: max(interval, 1)}
}

// tokenBucketState is scripts/tokenbucket.lua in memory.
type tokenBucketState struct {
	burst, interval int64 // tokens, µs per token
	tat             int64 // when the bucket is full again (µs)
}

func (s *tokenBucketState) Decide(now int64, n int, consume bool) Result {
	full := s.burst * s.interval
	tat := s.tat
	if tat < now {
		tat = now
	} else if tat > now+full {
		tat = now + full // the clock went back
	}
	allowAt := tat + int64(n)*s.interval - full
	allowed := allowAt <= now
	if allowed && consume {
		tat += int64(n) * s.interval
	}
	s.tat = tat
	left := tat - now
	r := Result{Allowed: allowed, Remaining: int((full - left) / s.interval), ResetAfter: micros(left)}
	if !allowed {
		r.RetryAfter = micros(allowAt - now)
	}
	return r
}

func (s *tokenBucketState) ExpiresAt() int64 { return s.tat }
