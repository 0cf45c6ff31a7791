package redislimit

import (
	_ "embed"
	"time"

	"github.com/redis/go-redis/v9"
)

//go:embed scripts/slidinglog.lua
var slidingLogLua string

var slidingLogScript = redis.NewScript(slidingLogLua)

// maxLogUnits bounds a sliding log's limit: the log keeps one entry per
// admitted unit (about 100 bytes each in Redis).
const maxLogUnits = 1 << 20

// SlidingLog returns an [Algorithm] that admits at most limit units in any
// period of length window, exactly: each admitted unit is logged with its
// time and counts until window has passed.
//
// limit must be from 1 to 1,048,576 and window between a millisecond and
// [MaxWindow] (used with µs precision); otherwise [New] returns an error
// wrapping [ErrInvalidConfig]. State per key grows with the units admitted
// in the last window, up to limit sorted-set entries; for limits in the
// thousands, [TokenBucket] keeps a constant few bytes instead.
func SlidingLog(limit int, window time.Duration) Algorithm {
	return slidingLog{limit: limit, window: window}
}

type slidingLog struct {
	limit  int
	window time.Duration
}

func (slidingLog) Name() string          { return "sl" }
func (a slidingLog) Limit() int          { return a.limit }
func (slidingLog) Script() *redis.Script { return slidingLogScript }

func (a slidingLog) Args() ([]any, error) {
	if err := checkUnits("sliding log", "limit", a.limit, maxLogUnits); err != nil {
		return nil, err
	}
	if err := checkSpan("sliding log", "window", a.window); err != nil {
		return nil, err
	}
	return []any{a.limit, a.window.Microseconds()}, nil
}
