package bench

import (
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/bench/internal/harness"
	"github.com/redislimit/redislimit/internal/admitcheck"
	"github.com/redislimit/redislimit/internal/redistest"
)

// The leases the hot-key benchmarks and the multi-process test give
// their limiters: WithLeases(leaseUnits, leaseAge).
const (
	leaseUnits = 10_000
	leaseAge   = 50 * time.Millisecond
)

// hotGoroutines is how many goroutines call Allow on the one key of
// BenchmarkHotKey.
const hotGoroutines = 64

// BenchmarkHotKey measures Allow on one key by hotGoroutines goroutines
// of one process, on a token bucket that never denies during the run,
// with WithLeases(leaseUnits, leaseAge) ("leases") and without
// ("no-leases"): decisions/s over the timed section, the script calls
// Redis ran per decision (script-calls/decision, from INFO commandstats)
// and the share of decisions made from leases (leased/decision).
func BenchmarkHotKey(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts []redislimit.Option
	}{
		{"leases", []redislimit.Option{redislimit.WithLeases(leaseUnits, leaseAge)}},
		{"no-leases", nil},
	} {
		b.Run(mode.name, func(b *testing.B) { hotKey(b, mode.opts) })
	}
}

func hotKey(b *testing.B, opts []redislimit.Option) {
	ctx := context.Background()
	ctr := new(harness.Counter)
	c := target.Client(b, ctr, hotGoroutines, nil)
	var leased atomic.Int64
	opts = append([]redislimit.Option{
		redislimit.WithTimeout(10 * time.Second),
		redislimit.WithObserver(func(_ context.Context, o redislimit.Observation) {
			if o.Leased {
				leased.Add(1)
			}
		}),
	}, opts...)
	lim, err := redislimit.New(c, redislimit.TokenBucket(100_000_000, time.Second, 100_000_000), opts...)
	if err != nil {
		b.Fatal(err)
	}
	key := target.Key(b.Name())
	// Dial every connection and load the script, untimed, without
	// touching the key.
	var wg sync.WaitGroup
	for range hotGoroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := lim.Peek(ctx, key); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	var next, denied atomic.Int64
	m := harness.Measure(b, target, ctr)
	leased.Store(0)
	b.ResetTimer()
	start := time.Now()
	for range hotGoroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				r, err := lim.Allow(ctx, key)
				if err != nil {
					b.Error(err)
					return
				}
				if !r.Allowed {
					denied.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	m.Done()
	if err := lim.ReturnLeases(ctx); err != nil {
		b.Fatalf("ReturnLeases: %v", err)
	}
	if denied.Load() != 0 {
		b.Fatalf("fixture: %d calls denied; the limit must never be reached", denied.Load())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
	if n := m.ScriptCalls(); n >= 0 {
		b.ReportMetric(float64(n)/float64(b.N), "script-calls/decision")
	}
	b.ReportMetric(float64(leased.Load())/float64(b.N), "leased/decision")
}

// workerEnv carries a [workerConfig], as JSON, to the child processes of
// the multi-process runs; TestLeaseWorkerProcess skips without it.
const workerEnv = "REDISLIMIT_LEASE_WORKER"

// workerConfig is what one child process of a multi-process run does: on
// the Redis at Addr, Goroutines goroutines call Allow on Key of a token
// bucket of Rate per second and Burst, with WithLeases(LeaseUnits,
// LeaseAge) unless LeaseUnits is 0, from Start until Start + Run (Unix
// ns), then return the leases and write a [workerResult] to Out.
type workerConfig struct {
	Addr       string
	Prefix     string
	Key        string
	Rate       int
	Burst      int
	LeaseUnits int
	LeaseAge   time.Duration
	Goroutines int
	Start      int64
	Run        time.Duration
	Index      int
	Out        string
}

// workerResult is what one child process reports, gob-encoded: the
// calls it made, those decided from leases, the script calls it sent
// before the start (to dial and load the script), when its first call
// started, and the admitted ones.
type workerResult struct {
	Calls       int64
	Leased      int64
	WarmScripts int64
	FirstStart  int64
	Admitted    []admitcheck.Call
}

// TestLeaseWorkerProcess is one process of a multi-process run (see
// runProcesses); it skips unless started as one.
func TestLeaseWorkerProcess(t *testing.T) {
	env := os.Getenv(workerEnv)
	if env == "" {
		t.Skip("a child process of TestLeasesMultiProcess and BenchmarkLeasesMultiProcess")
	}
	var cfg workerConfig
	if err := json.Unmarshal([]byte(env), &cfg); err != nil {
		t.Fatalf("%s: %v", workerEnv, err)
	}
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: cfg.Addr, PoolSize: cfg.Goroutines})
	defer c.Close()
	ctr := new(harness.Counter)
	c.AddHook(ctr)
	var leased atomic.Int64
	opts := []redislimit.Option{
		redislimit.WithPrefix(cfg.Prefix),
		redislimit.WithTimeout(10 * time.Second),
		redislimit.WithObserver(func(_ context.Context, o redislimit.Observation) {
			if o.Leased {
				leased.Add(1)
			}
		}),
	}
	if cfg.LeaseUnits > 0 {
		opts = append(opts, redislimit.WithLeases(cfg.LeaseUnits, cfg.LeaseAge))
	}
	lim, err := redislimit.New(c, redislimit.TokenBucket(cfg.Rate, time.Second, cfg.Burst), opts...)
	if err != nil {
		t.Fatal(err)
	}
	// Dial every connection and load the script before the start, on
	// another key.
	var wg sync.WaitGroup
	for range cfg.Goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := lim.Peek(ctx, cfg.Key+"/warm"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var warm int64
	for name, n := range ctr.Names() {
		switch name {
		case "eval", "evalsha", "eval_ro", "evalsha_ro":
			warm += n
		}
	}
	time.Sleep(time.Until(time.Unix(0, cfg.Start)))
	deadline := cfg.Start + int64(cfg.Run)
	var mu sync.Mutex
	res := workerResult{WarmScripts: warm, FirstStart: time.Now().UnixNano()}
	for range cfg.Goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine, calls, err := admitcheck.Record(deadline, func() (bool, error) {
				r, err := lim.Allow(ctx, cfg.Key)
				return r.Allowed, err
			})
			if err != nil {
				t.Errorf("Allow: %v", err)
			}
			mu.Lock()
			res.Admitted = append(res.Admitted, mine...)
			res.Calls += calls
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := lim.ReturnLeases(ctx); err != nil {
		t.Errorf("ReturnLeases: %v", err)
	}
	res.Leased = leased.Load()
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(res); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.Out, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The shape of a multi-process run: processes, each with goroutines
// calling Allow on one shared key.
const (
	mpProcesses  = 4
	mpGoroutines = 16
)

// mpRun is what a multi-process run saw, every process's together.
type mpRun struct {
	cfg         workerConfig // the first process's; Index and Out aside, all alike
	calls       int64
	leased      int64
	admitted    *admitcheck.Calls
	byDeadline  int     // admitted calls that returned before cfg.Start + cfg.Run
	scripts     int64   // script calls Redis ran from the start on, ReturnLeases included
	elapsed     float64 // seconds from the first call's start to the deadline
	lateStart   time.Duration
	lateEnd     time.Duration // from the deadline to the last admitted call's return
	worst       admitcheck.Excess
	bound       float64 // burst + rate × elapsed
	decisionsPS float64
}

// runProcesses starts a redis-server and mpProcesses child processes of
// this test binary (TestLeaseWorkerProcess), each running cfg with
// mpGoroutines goroutines on one key from a wall-clock start shared by
// all, and merges what they admitted.
func runProcesses(tb testing.TB, cfg workerConfig) mpRun {
	tb.Helper()
	s := redistest.Start(tb)
	admin := s.Client()
	ctx := context.Background()
	dir := tb.TempDir()
	cfg.Addr, cfg.Prefix, cfg.Key, cfg.Goroutines = s.Addr(), "mp:", "hot", mpGoroutines
	// Time for the children to start, dial and load the script: one that
	// starts late only calls less.
	cfg.Start = time.Now().Add(500 * time.Millisecond).UnixNano()
	before, err := harness.CommandStats(ctx, admin)
	if err != nil {
		tb.Fatal(err)
	}
	type child struct {
		cmd *exec.Cmd
		out bytes.Buffer
	}
	children := make([]*child, mpProcesses)
	for i := range children {
		c := cfg
		c.Index, c.Out = i, filepath.Join(dir, "worker-"+strconv.Itoa(i))
		env, err := json.Marshal(c)
		if err != nil {
			tb.Fatal(err)
		}
		ch := &child{cmd: exec.Command(os.Args[0], "-test.run=^TestLeaseWorkerProcess$", "-test.count=1", "-test.timeout=2m")}
		ch.cmd.Env = append(os.Environ(), workerEnv+"="+string(env), harness.AddrEnv+"="+s.Addr())
		ch.cmd.Stdout, ch.cmd.Stderr = &ch.out, &ch.out
		if err := ch.cmd.Start(); err != nil {
			tb.Fatalf("start worker %d: %v", i, err)
		}
		children[i] = ch
	}
	for i, ch := range children {
		if err := ch.cmd.Wait(); err != nil {
			tb.Fatalf("worker %d: %v\n%s", i, err, ch.out.String())
		}
	}
	after, err := harness.CommandStats(ctx, admin)
	if err != nil {
		tb.Fatal(err)
	}
	run := mpRun{cfg: cfg, scripts: harness.ScriptCalls(before, after)}
	var all []admitcheck.Call
	for i := range children {
		data, err := os.ReadFile(filepath.Join(dir, "worker-"+strconv.Itoa(i)))
		if err != nil {
			tb.Fatalf("worker %d: %v", i, err)
		}
		var r workerResult
		if err := gob.NewDecoder(bytes.NewReader(data)).Decode(&r); err != nil {
			tb.Fatalf("worker %d: %v", i, err)
		}
		run.calls += r.Calls
		run.leased += r.Leased
		run.scripts -= r.WarmScripts
		run.lateStart = max(run.lateStart, time.Duration(r.FirstStart-cfg.Start))
		all = append(all, r.Admitted...)
	}
	if len(all) == 0 {
		tb.Fatalf("%d calls and none admitted", run.calls)
	}
	run.admitted = admitcheck.New(all)
	t0 := run.admitted.FirstStart()
	run.worst = run.admitted.TokenBucket(t0, cfg.Burst, cfg.Rate, time.Second)
	// Every goroutine calls until the deadline: the limit should be met
	// by then.
	deadline := cfg.Start + int64(cfg.Run)
	run.byDeadline = run.admitted.ReturnedBefore(deadline)
	run.lateEnd = time.Duration(run.admitted.LastEnd() - deadline)
	run.elapsed = time.Duration(deadline - t0).Seconds()
	run.bound = float64(cfg.Burst) + float64(cfg.Rate)*run.elapsed
	run.decisionsPS = float64(run.calls) / cfg.Run.Seconds()
	return run
}

func (r mpRun) String() string {
	return fmt.Sprintf("%d processes × %d goroutines, %d calls (%.0f/s, %d from leases, %d script calls): %d admitted by the deadline of %.0f allowed (%.2f%%) in %.3fs, %d in all; latest start %v after the agreed one, last admitted return %v after the deadline; closest to the bound: %v",
		mpProcesses, mpGoroutines, r.calls, r.decisionsPS, r.leased, r.scripts, r.byDeadline, r.bound,
		100*float64(r.byDeadline)/r.bound, r.elapsed, r.admitted.Len(), r.lateStart, r.lateEnd, r.worst)
}

// TestLeasesMultiProcess runs four processes (this test binary, again),
// sixteen goroutines each, on one token-bucket key of one redis-server,
// with leases and without, and checks what they admitted together: never
// more than burst + rate × the time since the first call started, at
// any call's return (all processes read this machine's clock, so no
// slack is needed: see package admitcheck); and, the calls asking for
// more, at least 90% of that in all.
func TestLeasesMultiProcess(t *testing.T) {
	// Without leases, the processes make fewer calls than the token
	// bucket allows unless its rate is well under what the machine (two
	// cores, shared) decides in Redis.
	for _, mode := range []struct {
		name        string
		units       int
		rate, burst int
		run         time.Duration
	}{
		{"leases", leaseUnits, 20_000, 2_000, 1200 * time.Millisecond},
		{"no-leases", 0, 10_000, 1_000, 800 * time.Millisecond},
	} {
		t.Run(mode.name, func(t *testing.T) {
			// Only a run that fell short of the limit, which a loaded
			// machine that starves every process for a while causes
			// too, is run again; a breach fails at once.
			const attempts = 3
			for attempt := 1; ; attempt++ {
				r := runProcesses(t, workerConfig{Rate: mode.rate, Burst: mode.burst, LeaseUnits: mode.units, LeaseAge: leaseAge, Run: mode.run})
				t.Log(r)
				if r.worst.Over > 0 {
					t.Fatalf("admitted past burst + rate × elapsed: %v", r.worst)
				}
				err := admitcheck.Met(r.calls, int64(r.byDeadline), r.bound)
				if err == nil {
					return
				}
				if attempt == attempts {
					t.Fatalf("run %d of %d: %v", attempt, attempts, err)
				}
				t.Logf("run %d of %d: %v; running again", attempt, attempts, err)
			}
		})
	}
}

// BenchmarkLeasesMultiProcess runs what TestLeasesMultiProcess does for
// longer (3s) on a larger token bucket (500,000 per second, burst
// 50,000), with leases and without, once per run whatever b.N: ns/op is
// the run's wall time per decision; admitted/bound is the share of what
// the limit allows that was admitted, decisions/s all calls per second,
// script-calls/decision what Redis ran for them, leased/decision and
// denied/decision the shares of calls admitted from leases and denied.
// With leases, a call waits for the lease request in flight on its key
// rather than being denied while the bucket refills, so the processes'
// calls may keep to the limit without a denial.
func BenchmarkLeasesMultiProcess(b *testing.B) {
	for _, mode := range []struct {
		name  string
		units int
	}{
		{"leases", leaseUnits},
		{"no-leases", 0},
	} {
		b.Run(mode.name, func(b *testing.B) {
			r := runProcesses(b, workerConfig{Rate: 500_000, Burst: 50_000, LeaseUnits: mode.units, LeaseAge: leaseAge, Run: 3 * time.Second})
			b.Log(r)
			if r.worst.Over > 0 {
				b.Errorf("admitted past burst + rate × elapsed: %v", r.worst)
			}
			b.ReportMetric(1e9/r.decisionsPS, "ns/op")
			b.ReportMetric(float64(r.byDeadline)/r.bound, "admitted/bound")
			b.ReportMetric(r.decisionsPS, "decisions/s")
			b.ReportMetric(float64(r.scripts)/float64(r.calls), "script-calls/decision")
			b.ReportMetric(float64(r.leased)/float64(r.calls), "leased/decision")
			b.ReportMetric(float64(r.calls-int64(r.admitted.Len()))/float64(r.calls), "denied/decision")
		})
	}
}
