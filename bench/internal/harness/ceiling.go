package harness

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/luascript"
)

// Ceiling settings: redis-benchmark's pipeline depth and connections.
const (
	CeilingPipeline = 64
	CeilingConns    = 50
)

// Ceiling measures the Redis-bound ceiling of [OpenBucket] decisions:
// redis-benchmark, with CeilingConns connections each keeping
// CeilingPipeline commands in flight, runs b.N EVALSHAs of the token
// bucket's script with the arguments redislimit sends ("" for Redis
// TIME, cost 1, "1" to consume, the burst, and p and d of the refill
// interval, p/d µs) on
// a key of redislimit's format, "rl:tb:{…}", drawn uniformly from
// [SpreadKeys] keys. It reports calls/s as redis-benchmark measured them
// and, in place of ns/op, their inverse (redis-benchmark's start-up
// aside). It skips, saying so, on miniredis or when redis-benchmark is
// not in PATH. The fixture check: every script call succeeded (INFO
// commandstats), Redis ran at least b.N of them, and the bucket still
// allows calls on the keys.
func Ceiling(b *testing.B, t *Target) {
	if !t.Real() {
		b.Skip("no Redis-bound ceiling: the target is miniredis")
	}
	bin, err := exec.LookPath("redis-benchmark")
	if err != nil {
		b.Skip("no Redis-bound ceiling: redis-benchmark is not in PATH (install redis-tools)")
	}
	ctx := context.Background()
	admin := t.Admin()
	alg := OpenBucket()
	algArgs, err := alg.Args()
	if err != nil {
		b.Fatal(err)
	}
	// The script a Limiter on alg runs, assembled the same way.
	script := redis.NewScript(luascript.Assemble([]string{alg.Body()}, []int{len(algArgs)}, redislimit.TTLMargin))
	sha, err := script.Load(ctx, admin).Result()
	if err != nil {
		b.Fatalf("SCRIPT LOAD: %v", err)
	}
	if sha != script.Hash() {
		b.Fatalf("SCRIPT LOAD = %s, want %s", sha, script.Hash())
	}
	// The key of user key "ceiling:<run>:<seq>:<n>", n in [0, SpreadKeys),
	// as redis-benchmark writes __rand_int__ (12 digits, zero-padded).
	base := t.Key("ceiling")
	key := redislimit.DefaultPrefix + alg.Name() + ":{" + base + ":__rand_int__}"
	argv := []any{"", 1, "1"}
	argv = append(argv, algArgs...)
	host, port, err := net.SplitHostPort(t.Addr)
	if err != nil {
		b.Fatal(err)
	}
	n := b.N
	conns := min(CeilingConns, n)
	// redis-benchmark may abort ("All clients disconnected") when a
	// pipeline is deeper than the requests it is to send: a short run
	// sends shallower pipelines.
	depth := min(CeilingPipeline, n)
	args := []string{"-h", host, "-p", port, "-P", strconv.Itoa(depth), "-c", strconv.Itoa(conns),
		"-r", strconv.Itoa(SpreadKeys), "-n", strconv.Itoa(n), "--csv", "EVALSHA", sha, "1", key}
	for _, a := range argv {
		args = append(args, fmt.Sprint(a))
	}
	before, err := CommandStats(ctx, admin)
	if err != nil {
		b.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	b.ResetTimer()
	err = cmd.Run()
	b.StopTimer()
	if err != nil {
		b.Fatalf("redis-benchmark %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	rps, err := parseRPS(stdout.String())
	if err != nil {
		b.Fatalf("redis-benchmark: %v\n%s", err, stdout.String())
	}
	after, err := CommandStats(ctx, admin)
	if err != nil {
		b.Fatal(err)
	}
	if calls := after["evalsha"].Calls - before["evalsha"].Calls; calls < int64(n) {
		b.Fatalf("Redis ran %d EVALSHAs, want at least %d", calls, n)
	}
	if errs := after["evalsha"].Errors - before["evalsha"].Errors; errs != 0 {
		b.Fatalf("%d EVALSHAs failed", errs)
	}
	// Every key still allows a call: no call was denied (the replies
	// themselves are redis-benchmark's).
	for _, i := range []int{0, SpreadKeys / 2, SpreadKeys - 1} {
		k := redislimit.DefaultPrefix + alg.Name() + ":{" + base + fmt.Sprintf(":%012d}", i)
		peek := []any{"", 1, "0"}
		reply, err := script.Run(ctx, admin, []string{k}, append(peek, algArgs...)...).Int64Slice()
		if err != nil {
			b.Fatalf("peek: %v", err)
		}
		if len(reply) != 4 || reply[0] != 1 {
			b.Fatalf("peek of %s after the run = %v, want allowed", k, reply)
		}
	}
	b.ReportMetric(rps, "calls/s")
	b.ReportMetric(1e9/rps, "ns/op")
	b.Logf("redis-benchmark -P %d -c %d -n %d: %.0f calls/s", depth, conns, n, rps)
}

// parseRPS returns the rps column of redis-benchmark --csv's one test.
func parseRPS(out string) (float64, error) {
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		return 0, err
	}
	if len(recs) != 2 || len(recs[0]) < 2 || recs[0][1] != "rps" {
		return 0, fmt.Errorf("unexpected output: want a header with rps and one row")
	}
	rps, err := strconv.ParseFloat(recs[1][1], 64)
	if err != nil {
		return 0, err
	}
	if rps <= 0 {
		return 0, fmt.Errorf("rps = %v", rps)
	}
	return rps, nil
}
