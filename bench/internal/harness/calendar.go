package harness

import (
	"testing"

	"github.com/redislimit/redislimit/internal/algtest"
)

// CalendarVsFixedWindow measures the Redis time of a CalendarQuota
// decision against a FixedWindow one, the two taking turns of
// [TurnCalls] calls in one run as in [AllVsParts], on a key whose limit is
// never reached (allowed) and on a saturated one: fw-redis-usec/op,
// cal-redis-usec/op and cal/fw. The calendar script takes three more
// arguments (the period starts its client computes) and compares them
// with Redis's time; otherwise it does what the fixed window's does.
func CalendarVsFixedWindow(b *testing.B, t *Target) {
	fw, cal := fromRow(algtest.FixedWindow), fromRow(algtest.CalendarQuota)
	for _, kind := range []struct {
		name string
		subs []Subject
	}{
		{"allowed", []Subject{fw.Allowed(), cal.Allowed()}},
		{"saturated", []Subject{fw.Saturated(), cal.Saturated()}},
	} {
		b.Run(kind.name, func(b *testing.B) {
			usec := inTurns(b, t, []string{"fw", "cal"}, kind.subs)
			if usec[0] > 0 {
				b.ReportMetric(usec[1]/usec[0], "cal/fw")
			}
		})
	}
}
