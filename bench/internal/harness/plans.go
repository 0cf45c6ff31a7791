package harness

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
)

// PlanLimit is the capacity per hour of the plans [ChangedLimit] switches
// between: never reached in a benchmark.
const PlanLimit = 1 << 19

// ChangedLimit measures, for each row of the table of algorithms, the
// Redis time of a decision on a key whose limit changes at every call
// (two plans of one kind, derived with [redislimit.Limiter.Using], taking
// turns) against one whose limit stays the same, the two taking turns of
// [TurnCalls] calls in one run as in [AllVsParts]: same-redis-usec/op,
// changed-redis-usec/op and changed/same. Every call is allowed.
func ChangedLimit(b *testing.B, t *Target) {
	for _, row := range algtest.Rows {
		small, large := row.New(PlanLimit, time.Hour), row.New(2*PlanLimit, time.Hour)
		subject := func(alternate bool) Subject {
			return Subject{
				Allowed: true,
				Bind: func(c *redis.Client) (Decide, error) {
					lim, err := redislimit.New(c, small, redislimit.WithTimeout(benchTimeout))
					if err != nil {
						return nil, err
					}
					other, err := lim.Using(large)
					if err != nil {
						return nil, err
					}
					plans := [2]*redislimit.Limiter{lim, other}
					i := 0
					return func(ctx context.Context, key string) (bool, error) {
						l := plans[0]
						if alternate {
							l, i = plans[i], 1-i
						}
						r, err := l.Allow(ctx, key)
						return r.Allowed, err
					}, nil
				},
			}
		}
		b.Run(row.Name, func(b *testing.B) {
			usec := inTurns(b, t, []string{"same", "changed"}, []Subject{subject(false), subject(true)})
			if usec[0] > 0 {
				b.ReportMetric(usec[1]/usec[0], "changed/same")
			}
		})
	}
}
