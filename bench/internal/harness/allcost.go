package harness

import (
	"context"
	"testing"
)

// TurnCalls is how many calls each subject of [AllVsParts] makes on its
// turn before the next subject's turn.
const TurnCalls = 500

// AllVsParts runs, for each row of [Algorithms] that is an All, on an
// allowed and on a saturated key (every part allows, every part denies),
// one benchmark in which the All and each of its parts alone take turns of
// [TurnCalls] calls on one goroutine, each on a key of its own, until each
// has made b.N calls. INFO commandstats before and after each turn gives
// the Redis time of that turn's calls, so that load that comes and goes on
// the machine falls on every subject alike, which separate benchmarks
// seconds apart cannot promise.
//
// It reports, per subject (named by its Short: "tb", "fw", "sl", "all"),
// <short>-redis-usec/op: Redis time per call from INFO commandstats; on a
// server this process started, <short>-redis-cpu-usec/op: the server
// process's CPU per call from INFO cpu, which includes the statistics
// calls of each turn (the same for every subject); and all/dearer-part:
// All's redis-usec/op divided by the largest of its parts'. ns/op is the
// time of one call by each subject, statistics included. It needs a real
// server and skips otherwise.
func AllVsParts(b *testing.B, t *Target) {
	for _, a := range Algorithms() {
		if a.Parts == nil {
			continue
		}
		rows := append(append([]Algorithm(nil), a.Parts...), a)
		b.Run(a.Name+"/allowed", func(b *testing.B) {
			subs := make([]Subject, len(rows))
			for i, r := range rows {
				subs[i] = r.Allowed()
			}
			takeTurns(b, t, rows, subs)
		})
		b.Run(a.Name+"/saturated", func(b *testing.B) {
			subs := make([]Subject, len(rows))
			for i, r := range rows {
				subs[i] = r.Saturated()
			}
			takeTurns(b, t, rows, subs)
		})
	}
}

// takeTurns runs subs, the subjects of rows, in turns, as [AllVsParts]
// describes; the last row is the All.
func takeTurns(b *testing.B, t *Target, rows []Algorithm, subs []Subject) {
	names := make([]string, len(rows))
	for i, r := range rows {
		names[i] = r.Short
	}
	usec := inTurns(b, t, names, subs)
	var dearer float64
	for _, u := range usec[:len(usec)-1] {
		dearer = max(dearer, u)
	}
	if dearer > 0 {
		b.ReportMetric(usec[len(usec)-1]/dearer, "all/dearer-part")
	}
}

// inTurns runs subs in turns of [TurnCalls] calls on one goroutine, each
// on a key of its own, until each has made b.N calls, and reports each
// one's Redis time per call as <name>-redis-usec/op (and, on a server
// this process started, <name>-redis-cpu-usec/op), names[i] naming
// subs[i]. It returns the Redis time per call of each. It needs a real
// server and skips otherwise.
func inTurns(b *testing.B, t *Target, names []string, subs []Subject) []float64 {
	if !t.Real() {
		b.Skip("Redis time per subject comes from INFO commandstats, which needs a real Redis server")
	}
	ctx := context.Background()
	n := len(subs)
	decide := make([]Decide, n)
	ctrs := make([]*Counter, n)
	keys := make([]string, n)
	for i, s := range subs {
		d, c, ctr := bind(b, t, s, 2)
		decide[i], ctrs[i] = d, ctr
		keys[i] = t.Key(b.Name() + "/" + names[i])
		prepare(b, s, d, keys[i])
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
	cpuMeasured := t.Kind == KindServer
	usec := make([]float64, n)
	cpu := make([]float64, n)
	b.ResetTimer()
	for done, turn := 0, 0; done < b.N; done, turn = done+TurnCalls, turn+1 {
		calls := min(TurnCalls, b.N-done)
		for j := range n {
			i := (j + turn) % n // no subject always goes first
			ctrs[i].Reset()
			before, err := CommandStats(ctx, t.admin)
			if err != nil {
				b.Fatal(err)
			}
			var cpu0 float64
			if cpuMeasured {
				if cpu0, err = ProcessCPU(ctx, t.admin); err != nil {
					b.Fatal(err)
				}
			}
			for c := range calls {
				ok, err := decide[i](ctx, keys[i])
				if err != nil {
					b.Fatal(err)
				}
				if ok != subs[i].Allowed {
					b.Fatalf("%s: call %d: allowed = %v, want %v", names[i], done+c+1, ok, subs[i].Allowed)
				}
			}
			if cpuMeasured {
				cpu1, err := ProcessCPU(ctx, t.admin)
				if err != nil {
					b.Fatal(err)
				}
				cpu[i] += cpu1 - cpu0
			}
			after, err := CommandStats(ctx, t.admin)
			if err != nil {
				b.Fatal(err)
			}
			usec[i] += ServerUsec(before, after, ctrs[i].Names())
		}
	}
	b.StopTimer()
	for i, s := range subs {
		verify(b, t, s, keys[i], int64(b.N))
	}
	for i, name := range names {
		usec[i] /= float64(b.N)
		b.ReportMetric(usec[i], name+"-redis-usec/op")
		if cpuMeasured {
			b.ReportMetric(cpu[i]/float64(b.N), name+"-redis-cpu-usec/op")
		}
	}
	return usec
}
