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
	call, err := OpenBucketCall()
	if err != nil {
		b.Fatal(err)
	}
	script := redis.NewScript(call.Script)
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
	key := call.Key(base + ":__rand_int__")
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
	args = append(args, call.Args...)
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
		k := call.Key(base + fmt.Sprintf(":%012d", i))
		reply, err := script.Run(ctx, admin, []string{k}, call.PeekArgs()...).Int64Slice()
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

// BucketCall is an [OpenBucket] decision as a Limiter with default options
// sends it to Redis: EVALSHA (or EVAL) of Script on one key with ARGV
// Args, for running the same script through another client.
type BucketCall struct {
	// Script is the Lua source that a Limiter on OpenBucket runs,
	// assembled as the Limiter assembles it.
	Script string
	// Args is the ARGV of a decision that consumes 1: "" for Redis's
	// TIME, the cost "1", the mode "1" (consume), then the bucket's
	// arguments in decimal, as go-redis writes them.
	Args []string
	// name is the algorithm's name in its Redis keys.
	name string
}

// OpenBucketCall returns the BucketCall of [OpenBucket].
func OpenBucketCall() (BucketCall, error) {
	alg := OpenBucket()
	algArgs, err := alg.Args()
	if err != nil {
		return BucketCall{}, err
	}
	args := []string{"", "1", luascript.Consume}
	for _, a := range algArgs {
		args = append(args, fmt.Sprint(a))
	}
	return BucketCall{
		Script: luascript.Assemble([]string{alg.Body()}, []int{len(algArgs)}, redislimit.TTLMargin),
		Args:   args,
		name:   alg.Name(),
	}, nil
}

// Key returns the Redis key of the user key k, in redislimit's default
// format ("rl:tb:{k}"); k holds no '{' or '}'.
func (c BucketCall) Key(k string) string {
	return redislimit.DefaultPrefix + c.name + ":{" + k + "}"
}

// PeekArgs returns the ARGV of a decision that reports without consuming.
func (c BucketCall) PeekArgs() []any {
	out := make([]any, len(c.Args))
	for i, a := range c.Args {
		out[i] = a
	}
	out[2] = luascript.Peek
	return out
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
