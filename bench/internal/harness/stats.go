package harness

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// CmdStat is one command's line of INFO commandstats.
type CmdStat struct {
	Calls int64 // calls, including those made from scripts and EXEC
	Usec  int64 // server time in microseconds, a script's inner calls included
	// Errors is rejected_calls plus failed_calls (Redis 7 and later): the
	// calls that returned an error.
	Errors int64
}

// CommandStats returns INFO commandstats by lower-case command name, with
// subcommands ("script|load") added into their command ("script").
func CommandStats(ctx context.Context, c redis.Cmdable) (map[string]CmdStat, error) {
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("INFO commandstats: %w", err)
	}
	return ParseCommandStats(info)
}

// ParseCommandStats parses the text of INFO commandstats, as [CommandStats]
// describes.
func ParseCommandStats(info string) (map[string]CmdStat, error) {
	out := make(map[string]CmdStat)
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":")
		if !ok {
			return nil, fmt.Errorf("commandstats: malformed line %q", line)
		}
		name, _, _ = strings.Cut(strings.ToLower(name), "|")
		var s CmdStat
		var seen int
		for _, f := range strings.Split(fields, ",") {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "calls", "usec", "rejected_calls", "failed_calls":
			default:
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("commandstats: %s in %q: %w", k, line, err)
			}
			switch k {
			case "calls":
				s.Calls = n
				seen++
			case "usec":
				s.Usec = n
				seen++
			default:
				s.Errors += n
			}
		}
		if seen != 2 {
			return nil, fmt.Errorf("commandstats: no calls or usec in %q", line)
		}
		prev := out[name]
		out[name] = CmdStat{Calls: prev.Calls + s.Calls, Usec: prev.Usec + s.Usec, Errors: prev.Errors + s.Errors}
	}
	return out, nil
}

// ServerUsec returns the Redis time, in microseconds, spent on the commands
// a client sent at the top level, given INFO commandstats before and after
// and the client's top-level command counts. A command also called from
// scripts or EXEC (whose time already includes it) contributes only the
// share of its time that matches the share of its calls the client made.
func ServerUsec(before, after map[string]CmdStat, sent map[string]int64) float64 {
	var total float64
	for name, n := range sent {
		calls := after[name].Calls - before[name].Calls
		usec := after[name].Usec - before[name].Usec
		if calls <= 0 || n <= 0 {
			continue
		}
		share := float64(n) / float64(calls)
		if share > 1 {
			share = 1
		}
		total += float64(usec) * share
	}
	return total
}

// ProcessCPU returns the CPU time, in microseconds, that the Redis server
// process has used (used_cpu_user + used_cpu_sys of INFO cpu).
func ProcessCPU(ctx context.Context, c redis.Cmdable) (float64, error) {
	info, err := c.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, fmt.Errorf("INFO cpu: %w", err)
	}
	return ParseProcessCPU(info)
}

// ParseProcessCPU parses the text of INFO cpu as [ProcessCPU] describes.
func ParseProcessCPU(info string) (float64, error) {
	var total float64
	seen := 0
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (k != "used_cpu_user" && k != "used_cpu_sys") {
			continue
		}
		sec, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, fmt.Errorf("INFO cpu: %s: %w", k, err)
		}
		total += sec * 1e6
		seen++
	}
	if seen != 2 {
		return 0, fmt.Errorf("INFO cpu: no used_cpu_user and used_cpu_sys")
	}
	return total, nil
}

// InnerCalls returns how many commands Redis ran that the client did not
// send at the top level (those a script's redis.call or an EXEC ran), given
// INFO commandstats before and after and the client's top-level command
// counts. INFO itself is not counted.
func InnerCalls(before, after map[string]CmdStat, sent map[string]int64) int64 {
	var n int64
	for name, a := range after {
		if name == "info" {
			continue
		}
		if d := a.Calls - before[name].Calls - sent[name]; d > 0 {
			n += d
		}
	}
	return n
}

// Meter measures one timed section of a benchmark: round trips through its
// [Counter] and, on a real server, Redis time from INFO commandstats and
// (on a server this process started) Redis process CPU from INFO cpu.
type Meter struct {
	b      *testing.B
	t      *Target
	ctr    *Counter
	before map[string]CmdStat
	cpu    float64 // process CPU µs at the start; -1 when not measured
	// scripts is the script calls Redis ran in the section, set by Done;
	// -1 when not measured.
	scripts int64
}

// Measure resets ctr, takes the INFO commandstats snapshot and returns a
// Meter; it calls b.ReportAllocs. Call it just before the timed loop (b.Loop
// starts the timer itself; RunParallel needs b.ResetTimer first).
func Measure(b *testing.B, t *Target, ctr *Counter) *Meter {
	b.Helper()
	b.ReportAllocs()
	m := &Meter{b: b, t: t, ctr: ctr, cpu: -1, scripts: -1}
	if t.Real() {
		s, err := CommandStats(context.Background(), t.admin)
		if err != nil {
			b.Fatal(err)
		}
		m.before = s
	}
	if t.Kind == KindServer {
		cpu, err := ProcessCPU(context.Background(), t.admin)
		if err != nil {
			b.Fatal(err)
		}
		m.cpu = cpu
	}
	ctr.Reset()
	return m
}

// Done stops the timer and reports, over b.N operations, roundtrips/op;
// on a real server, redis-usec/op: the time Redis spent in the commands
// the client sent, a wall-clock figure that grows when the server's thread
// is preempted; inner-calls/op: the commands that scripts and EXEC ran;
// and on a server this process started, redis-cpu-usec/op:
// the server process's CPU time, network I/O and the INFO calls included.
func (m *Meter) Done() {
	b := m.b
	b.Helper()
	b.StopTimer()
	if b.N == 0 {
		return
	}
	sent := m.ctr.Names()
	b.ReportMetric(float64(m.ctr.Trips())/float64(b.N), "roundtrips/op")
	if m.before == nil {
		return
	}
	after, err := CommandStats(context.Background(), m.t.admin)
	if err != nil {
		b.Fatal(err)
	}
	m.scripts = ScriptCalls(m.before, after)
	b.ReportMetric(ServerUsec(m.before, after, sent)/float64(b.N), "redis-usec/op")
	b.ReportMetric(float64(InnerCalls(m.before, after, sent))/float64(b.N), "inner-calls/op")
	if m.cpu >= 0 {
		cpu, err := ProcessCPU(context.Background(), m.t.admin)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric((cpu-m.cpu)/float64(b.N), "redis-cpu-usec/op")
	}
}

// ScriptCalls returns the script calls (EVAL, EVALSHA and their _RO
// forms) that Redis ran between two INFO commandstats snapshots, by
// whatever client.
func ScriptCalls(before, after map[string]CmdStat) int64 {
	var n int64
	for _, name := range []string{"eval", "evalsha", "eval_ro", "evalsha_ro"} {
		n += after[name].Calls - before[name].Calls
	}
	return n
}

// ScriptCalls returns the script calls Redis ran during the section that
// [Meter.Done] ended, or -1 when they were not measured (on miniredis, or
// before Done).
func (m *Meter) ScriptCalls() int64 { return m.scripts }
