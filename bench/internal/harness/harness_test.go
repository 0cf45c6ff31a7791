package harness

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/redistest"
)

func TestParseCommandStats(t *testing.T) {
	info := "# Commandstats\r\n" +
		"cmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_script|load:calls=2,usec=7,usec_per_call=3.50,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_script|exists:calls=1,usec=1,usec_per_call=1.00,rejected_calls=1,failed_calls=2\r\n" +
		"cmdstat_INCR:calls=3,usec=2,usec_per_call=0.67\r\n"
	got, err := ParseCommandStats(info)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]CmdStat{
		"evalsha": {Calls: 10, Usec: 50},
		"script":  {Calls: 3, Usec: 8, Errors: 3},
		"incr":    {Calls: 3, Usec: 2},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseCommandStats (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"cmdstat_get\r\n", "cmdstat_get:calls=x,usec=1\r\n", "cmdstat_get:calls=1\r\n"} {
		if _, err := ParseCommandStats(bad); err == nil {
			t.Errorf("ParseCommandStats(%q) = nil error, want one", bad)
		}
	}
}

func TestParseProcessCPU(t *testing.T) {
	info := "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:0.250001\r\nused_cpu_sys_children:9.000000\r\n"
	got, err := ParseProcessCPU(info)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1750001.0; math.Abs(got-want) > 1e-3 {
		t.Errorf("ParseProcessCPU = %v, want %v", got, want)
	}
	if _, err := ParseProcessCPU("# CPU\r\nused_cpu_sys:1.5\r\n"); err == nil {
		t.Error("ParseProcessCPU without used_cpu_user = nil error, want one")
	}
}

func TestServerUsec(t *testing.T) {
	before := map[string]CmdStat{"evalsha": {Calls: 5, Usec: 100}, "get": {Calls: 0, Usec: 0}}
	after := map[string]CmdStat{
		"evalsha": {Calls: 15, Usec: 300}, // +10 calls, +200 µs, all sent by the client
		"get":     {Calls: 20, Usec: 40},  // 10 sent, 10 from inside scripts
		"info":    {Calls: 1, Usec: 1000}, // not sent: ignored
	}
	sent := map[string]int64{"evalsha": 10, "get": 10}
	got := ServerUsec(before, after, sent)
	if want := 200.0 + 20.0; math.Abs(got-want) > 1e-9 {
		t.Errorf("ServerUsec = %v, want %v", got, want)
	}
	if got, want := InnerCalls(before, after, sent), int64(10); got != want {
		t.Errorf("InnerCalls = %d, want %d", got, want)
	}
}

func TestCounter(t *testing.T) {
	ctx := context.Background()
	m := redistest.Mini(t)
	var ctr Counter
	c := redistest.NewClient(t, m.Addr())
	c.AddHook(&ctr)
	if err := c.Ping(ctx).Err(); err != nil { // the first command also sets up the connection
		t.Fatal(err)
	}
	ctr.Reset()

	c.Incr(ctx, "k")
	if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Get(ctx, "k")
		p.Time(ctx)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, "k")
		p.Expire(ctx, "k", 60e9)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, want := ctr.Trips(), int64(3); got != want {
		t.Errorf("Trips = %d, want %d", got, want)
	}
	want := map[string]int64{"incr": 1, "get": 1, "time": 1, "multi": 1, "exec": 1}
	if diff := cmp.Diff(want, ctr.Names()); diff != "" {
		t.Errorf("Names (-want +got):\n%s", diff)
	}
	ctr.Reset()
	if ctr.Trips() != 0 || len(ctr.Names()) != 0 {
		t.Errorf("after Reset: Trips = %d, Names = %v, want zero", ctr.Trips(), ctr.Names())
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:6379", true},
		{"localhost:6379", true},
		{"[::1]:6379", true},
		{"10.0.0.1:6379", false},
		{"127.0.0.2:6379", false},
		{"redis.example.com:6379", false},
		{"127.0.0.1", false},
	} {
		if err := checkLoopback(tc.addr); (err == nil) != tc.ok {
			t.Errorf("checkLoopback(%q) = %v, want ok %v", tc.addr, err, tc.ok)
		}
	}
}

// TestCounterAllocs keeps the hook out of the allocs/op it helps report.
func TestCounterAllocs(t *testing.T) {
	var ctr Counter
	ctr.add("evalsha")
	hook := ctr.ProcessHook(func(context.Context, redis.Cmder) error { return nil })
	cmd := redis.NewCmd(context.Background(), "evalsha", "abc", 1, "k")
	if n := testing.AllocsPerRun(100, func() { _ = hook(context.Background(), cmd) }); n != 0 {
		t.Errorf("ProcessHook allocates %v times per command, want 0", n)
	}
}

// TestAlgorithmKeys checks the fixtures of [Algorithms]: Short is the
// algorithm's name, and one allowed call writes exactly the keys that
// RedisKeys names, which the fixture checks then inspect.
func TestAlgorithmKeys(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, be redistest.Backend) {
		ctx := context.Background()
		c := be.Client(t)
		for _, a := range Algorithms() {
			for _, cfg := range []struct {
				name string
				alg  redislimit.Algorithm
			}{{"open", a.Open}, {"tight", a.Tight}} {
				if got := cfg.alg.Name(); got != a.Short {
					t.Errorf("%s %s: Name() = %q, want Short %q", a.Name, cfg.name, got, a.Short)
				}
				user := a.Name + "/" + cfg.name
				l, err := redislimit.New(c, cfg.alg)
				if err != nil {
					t.Fatalf("%s %s: New: %v", a.Name, cfg.name, err)
				}
				if r, err := l.Allow(ctx, user); err != nil || !r.Allowed {
					t.Fatalf("%s %s: Allow = %+v, %v, want allowed", a.Name, cfg.name, r, err)
				}
				got, err := c.Keys(ctx, "*{"+user+"}").Result()
				if err != nil {
					t.Fatal(err)
				}
				want := a.RedisKeys(user)
				if diff := cmp.Diff(want, got, cmpopts.SortSlices(func(x, y string) bool { return x < y })); diff != "" {
					t.Errorf("%s %s: keys after one call (-RedisKeys +Redis):\n%s", a.Name, cfg.name, diff)
				}
			}
		}
	})
}

func TestCounterCount(t *testing.T) {
	var ctr Counter
	ctr.Count("evalsha")
	ctr.Count("eval")
	ctr.Count("evalsha")
	ctr.Count("hello") // sets up a connection: not counted
	if got, want := ctr.Trips(), int64(3); got != want {
		t.Errorf("Trips = %d, want %d", got, want)
	}
	want := map[string]int64{"evalsha": 2, "eval": 1}
	if diff := cmp.Diff(want, ctr.Names()); diff != "" {
		t.Errorf("Names (-want +got):\n%s", diff)
	}
}

// recorder is a go-redis hook that keeps the arguments of every script
// call, in decimal as go-redis writes them.
type recorder struct {
	mu    sync.Mutex
	calls [][]string // guarded by mu
}

func (r *recorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *recorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.keep(cmd)
		return next(ctx, cmd)
	}
}

func (r *recorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			r.keep(cmd)
		}
		return next(ctx, cmds)
	}
}

func (r *recorder) keep(cmd redis.Cmder) {
	if name := cmd.Name(); name != "evalsha" && name != "eval" {
		return
	}
	line := make([]string, len(cmd.Args()))
	for i, a := range cmd.Args() {
		line[i] = fmt.Sprint(a)
	}
	r.mu.Lock()
	r.calls = append(r.calls, line)
	r.mu.Unlock()
}

// TestOpenBucketCall checks that BucketCall is what a Limiter on
// OpenBucket with default options sends: the same script (by SHA-1, and
// by source in the EVAL that answers NOSCRIPT), key and arguments.
func TestOpenBucketCall(t *testing.T) {
	ctx := context.Background()
	call, err := OpenBucketCall()
	if err != nil {
		t.Fatal(err)
	}
	c := redistest.NewClient(t, redistest.Mini(t).Addr())
	var rec recorder
	c.AddHook(&rec)
	l, err := redislimit.New(c, OpenBucket())
	if err != nil {
		t.Fatal(err)
	}
	const user = "bucket-call"
	if r, err := l.Allow(ctx, user); err != nil || !r.Allowed {
		t.Fatalf("Allow = %+v, %v, want allowed", r, err)
	}
	sum := sha1.Sum([]byte(call.Script))
	tail := append([]string{"1", call.Key(user)}, call.Args...)
	want := [][]string{
		append([]string{"evalsha", hex.EncodeToString(sum[:])}, tail...),
		append([]string{"eval", call.Script}, tail...), // the script is not loaded yet
	}
	if diff := cmp.Diff(want, rec.calls); diff != "" {
		t.Errorf("script calls of Allow (-BucketCall +sent):\n%s", diff)
	}
	if got, want := call.Key(user), "rl:tb:{"+user+"}"; got != want {
		t.Errorf("Key(%q) = %q, want %q", user, got, want)
	}
	peek := call.PeekArgs()
	if len(peek) != len(call.Args) || peek[2] != "0" || peek[1] != "1" {
		t.Errorf("PeekArgs = %v, want Args %v with the mode 0", peek, call.Args)
	}
}
