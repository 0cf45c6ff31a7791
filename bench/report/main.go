// Command report runs redislimit's benchmarks (bench/) and the peers'
// (bench/peers) in interleaved rounds, summarises them with benchstat, and
// writes Markdown tables to stdout and bench/RESULTS.md: one per package,
// then the throughput on 10,000 keys against redis_rate, go-redis's
// AutoPipeliner, rueidis and the Redis-bound ceiling (redis-benchmark, when
// installed), the hot denied key with and without the deny cache, AllowMany
// against Allow in a row, All against its parts alone, and the targets.
//
// Run it from the repository root:
//
//	go run ./bench/report            # 6 rounds of each package, about 15 minutes
//	go run ./bench/report -count 10  # more rounds, tighter intervals
//
// Each round runs each package's test binary once with -count 1, so that
// slow phases of a noisy machine spread over every benchmark instead of
// landing on a few. Raw output goes to bench/out/ (bench.txt, peers.txt and
// benchstat's text output). The Redis is the one the benchmarks pick:
// REDIS_ADDR (loopback only) when set, else a redis-server they start.
package main

import (
	"bytes"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redislimit/redislimit/bench/internal/harness"
)

// benchstat is the pinned benchstat, run with `go run` so that no go.mod
// requires golang.org/x/perf.
const benchstat = "golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da"

func main() {
	count := flag.Int("count", 6, "rounds: runs of each benchmark, interleaved")
	benchtime := flag.String("benchtime", "1s", "-benchtime for each benchmark")
	filter := flag.String("bench", ".", "-bench regexp")
	outDir := flag.String("out", "bench/out", "directory for raw output")
	results := flag.String("results", "bench/RESULTS.md", "Markdown file to write (\"\" for stdout only)")
	reuse := flag.Bool("reuse", false, "summarise the raw output already in -out instead of running")
	flag.Parse()
	if err := run(*count, *benchtime, *filter, *outDir, *results, *reuse); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

// pkg is one benchmark package.
type pkg struct {
	name string // "bench" or "peers"
	dir  string // package directory, relative to the repository root
}

var pkgs = []pkg{{"bench", "bench"}, {"peers", "bench/peers"}}

func run(count int, benchtime, filter, outDir, results string, reuse bool) error {
	if _, err := os.Stat("bench/peers/go.mod"); err != nil {
		return errors.New("run me from the repository root: go run ./bench/report")
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	raw := func(p pkg) string { return filepath.Join(outDir, p.name+".txt") }
	start := time.Now()
	srcFile := filepath.Join(outDir, "source.txt")
	if !reuse {
		if err := os.WriteFile(srcFile, []byte(source()), 0o644); err != nil {
			return err
		}
		if count < 1 {
			return errors.New("-count must be at least 1")
		}
		bins := make(map[string]string)
		for _, p := range pkgs {
			bin, err := filepath.Abs(filepath.Join(outDir, p.name+".test"))
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "building %s\n", p.dir)
			if err := command(p.dir, io.Discard, "go", "test", "-c", "-o", bin, "."); err != nil {
				return err
			}
			bins[p.name] = bin
			if err := os.WriteFile(raw(p), nil, 0o644); err != nil {
				return err
			}
		}
		for round := range count {
			order := slices.Clone(pkgs)
			if round%2 == 1 {
				slices.Reverse(order) // neither package always runs first
			}
			for _, p := range order {
				fmt.Fprintf(os.Stderr, "round %d/%d: %s (%v elapsed)\n", round+1, count, p.dir, time.Since(start).Round(time.Second))
				f, err := os.OpenFile(raw(p), os.O_APPEND|os.O_WRONLY, 0o644)
				if err != nil {
					return err
				}
				err = command(p.dir, f, bins[p.name], "-test.run", "^$", "-test.bench", filter,
					"-test.benchtime", benchtime, "-test.count", "1")
				f.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", p.dir, err)
				}
			}
		}
	}
	runs := make(map[string]*stats)
	var text bytes.Buffer
	for _, p := range pkgs {
		s, err := summarise(raw(p), &text)
		if err != nil {
			return err
		}
		runs[p.name] = s
	}
	if err := os.WriteFile(filepath.Join(outDir, "benchstat.txt"), text.Bytes(), 0o644); err != nil {
		return err
	}
	src, err := os.ReadFile(srcFile)
	if err != nil {
		src = []byte("unknown")
	}
	md := markdown(runs, count, benchtime, reuse, string(src), text.String())
	fmt.Print(md)
	if results != "" {
		if err := os.WriteFile(results, []byte(md), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s in %v\n", results, time.Since(start).Round(time.Second))
	}
	return nil
}

// command runs name in dir with stdout to w and stderr passed through.
func command(dir string, w io.Writer, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout = w
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

// stats holds one package's medians by benchmark (without "Benchmark" and
// the -GOMAXPROCS suffix) and unit, and its configuration lines.
type stats struct {
	median map[string]map[string]float64
	order  []string // benchmark names in the order they first appear
	config map[string]string
}

func (s *stats) get(name, unit string) float64 {
	if v, ok := s.median[name][unit]; ok {
		return v
	}
	return math.NaN()
}

// summarise runs benchstat on file, appending its text output to text, and
// returns the medians from its CSV output.
func summarise(file string, text *bytes.Buffer) (*stats, error) {
	var out, errs bytes.Buffer
	cmd := exec.Command("go", "run", benchstat, file)
	cmd.Stdout, cmd.Stderr = &out, &errs
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("benchstat %s: %w\n%s", file, err, errs.String())
	}
	fmt.Fprintf(text, "## %s\n\n%s\n", file, out.String())

	out.Reset()
	errs.Reset()
	cmd = exec.Command("go", "run", benchstat, "-format", "csv", file)
	cmd.Stdout, cmd.Stderr = &out, &errs
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("benchstat -format csv %s: %w\n%s", file, err, errs.String())
	}
	s := &stats{median: make(map[string]map[string]float64), config: make(map[string]string)}
	if err := parseCSV(out.String(), s); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(s.median) == 0 {
		return nil, fmt.Errorf("%s: no benchmark results", file)
	}
	return s, nil
}

// parseCSV reads benchstat's CSV: configuration lines, then one block per
// unit, each a header (",file,"), a unit line (",unit,CI") and rows
// (name,median,CI), blocks separated by blank lines.
func parseCSV(text string, s *stats) error {
	var unit string
	for _, line := range strings.Split(text, "\n") {
		if line == "" {
			unit = ""
			continue
		}
		if k, v, ok := strings.Cut(line, ": "); ok && !strings.Contains(k, ",") {
			s.config[k] = strings.TrimSpace(v)
			continue
		}
		rec, err := csv.NewReader(strings.NewReader(line)).Read()
		if err != nil {
			return fmt.Errorf("benchstat CSV line %q: %w", line, err)
		}
		if len(rec) < 2 {
			continue
		}
		switch {
		case rec[0] == "" && len(rec) >= 3 && rec[2] == "CI":
			unit = rec[1]
		case rec[0] == "" || rec[0] == "geomean" || unit == "":
		default:
			v, err := strconv.ParseFloat(rec[1], 64)
			if err != nil {
				return fmt.Errorf("benchstat CSV line %q: %w", line, err)
			}
			name := trimProcs(rec[0])
			if s.median[name] == nil {
				s.median[name] = make(map[string]float64)
				s.order = append(s.order, name)
			}
			s.median[name][unit] = v
		}
	}
	return nil
}

// trimProcs drops the -GOMAXPROCS suffix of a benchmark name.
func trimProcs(name string) string {
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			return name[:i]
		}
	}
	return name
}

// Benchmark names the table and the targets refer to.
const (
	ping      = "Floor/ping"
	luaFloor  = "Floor/evalsha-return-1"
	incrExp   = "Naive/incr+expire"
	redisRate = "Peer/redis_rate"

	// Issue #9's benchmarks: BenchmarkThroughput and BenchmarkCeiling
	// (bench/peers), BenchmarkDenyCache and BenchmarkAllowMany (bench/).
	throughput = "Throughput/"
	ceiling    = "Ceiling/redis-benchmark-P64"
	denyCache  = "DenyCache/"
	allowMany  = "AllowMany/allow-many"
	allowSeq   = "AllowMany/allow-sequential"

	// BenchmarkAllVsParts (bench/).
	allVsParts = "AllVsParts/"
)

// Rows of the throughput table: BenchmarkThroughput's subjects, and the
// goroutine counts each runs at.
var (
	throughputSubjects = []struct{ name, desc string }{
		{"redislimit", "redislimit, default options (batching on)"},
		{"redislimit-batch1", "redislimit, WithBatchSize(1) (no batching)"},
		{"redislimit-autopipeline", "redislimit on go-redis's AutoPipeliner"},
		{"redis_rate", "redis_rate"},
		{"rueidislimiter", "rueidislimiter (fixed window, rueidis client)"},
		{"rueidis-script", "redislimit's script by rueidis's Lua.Exec"},
	}
	throughputGoroutines = []int{1, 8, 64}
)

// spread returns the name of a BenchmarkThroughput row.
func spread(subject string, g int) string {
	return throughput + subject + "/g" + strconv.Itoa(g)
}

// subjects returns the subjects of s (names without /seq and /par), in
// the order the benchmarks ran.
func subjects(s *stats) []string {
	seen := make(map[string]bool)
	var out []string
	for _, name := range s.order {
		base, ok := strings.CutSuffix(name, "/seq")
		if !ok {
			base, ok = strings.CutSuffix(name, "/par")
		}
		if ok && !seen[base] {
			seen[base] = true
			out = append(out, base)
		}
	}
	return out
}

// memoryName returns the KeyMemory benchmark that belongs to subject.
func memoryName(subject string) string {
	base := strings.TrimSuffix(subject, "/allowed")
	return "KeyMemory/" + base[strings.LastIndexByte(base, '/')+1:]
}

func markdown(runs map[string]*stats, count int, benchtime string, reuse bool, src, text string) string {
	var b strings.Builder
	cfg := runs["bench"].config
	fmt.Fprintf(&b, "# Benchmark results\n\n")
	if strings.Contains(cfg["redis"], "miniredis") {
		fmt.Fprintf(&b, "> **WARNING: measured on embedded miniredis, not Redis. These figures say nothing about Redis.**\n\n")
	}
	rounds := fmt.Sprintf("%d interleaved rounds of -benchtime %s", count, benchtime)
	if reuse {
		rounds = "the rounds recorded in bench/out"
	}
	fmt.Fprintf(&b, "Target: %s, client and server on one machine (%s/%s, %s, %d CPUs); %s; medians by benchstat.\n",
		cfg["redis"], cfg["goos"], cfg["goarch"], cfg["cpu"], runtime.NumCPU(), rounds)
	fmt.Fprintf(&b, "Source: %s.\n", src)
	fmt.Fprintf(&b, "Reproduce: `go run ./bench/report` (raw output and benchstat's confidence intervals in bench/out/).\n\n")
	fmt.Fprintf(&b, "Columns: client time per call on one goroutine (ns/op) and its ratio to PING and to INCR+EXPIRE from the same process; "+
		"allocations per call; calls per second with 64 goroutines each on its own key; round trips per call; "+
		"commands run inside scripts or EXEC per call (each redis.call costs Redis a few µs); "+
		"Redis time per call in the commands sent, from INFO commandstats (µs, the figure that carries to other hardware; wall-clock inside Redis, so it grows when the machine is loaded) and its ratio to EVALSHA of `return 1`; "+
		"the redis-server process's CPU time per call from INFO cpu (network I/O included, which dominates it); "+
		"MEMORY USAGE of one key after 100 and 1000 allowed calls.\n\n")

	fmt.Fprintf(&b, "## redislimit, the floors and the naive counters (bench/)\n\n")
	table(&b, runs["bench"], runs["bench"])
	fmt.Fprintf(&b, "\n## Peers, in their own process with the same floors (bench/peers)\n\n")
	table(&b, runs["peers"], runs["peers"])
	fmt.Fprintf(&b, "\n## Throughput on 10,000 keys (bench/peers)\n\n")
	throughputTable(&b, runs["peers"])
	fmt.Fprintf(&b, "\n## A hot denied key (bench/)\n\n")
	denyCacheTable(&b, runs["bench"])
	fmt.Fprintf(&b, "\n## AllowMany (bench/)\n\n")
	allowManyTable(&b, runs["bench"])
	fmt.Fprintf(&b, "\n## All against its parts (bench/)\n\n")
	allTable(&b, runs["bench"])
	fmt.Fprintf(&b, "\n## Targets\n\n")
	targets(&b, runs["bench"], runs["peers"])
	fmt.Fprintf(&b, "\n<details><summary>benchstat output</summary>\n\n```\n%s```\n\n</details>\n", text)
	return b.String()
}

// source describes the code measured: the commit, and the files outside
// bench/ that differ from it in the working tree.
func source() string {
	head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "not a git checkout"
	}
	desc := "commit " + strings.TrimSpace(string(head))
	status, err := exec.Command("git", "status", "--porcelain", "--", ".", ":!bench").Output()
	if err != nil {
		return desc
	}
	var dirty []string
	for _, line := range strings.Split(strings.TrimRight(string(status), "\n"), "\n") {
		if len(line) > 3 {
			dirty = append(dirty, line[3:])
		}
	}
	if len(dirty) > 0 {
		desc += " with uncommitted changes to " + strings.Join(dirty, ", ")
	}
	return desc
}

func table(b *strings.Builder, s, mem *stats) {
	fmt.Fprintf(b, "| benchmark | ns/op | × PING | × INCR+EXPIRE | allocs/op | parallel ops/s | round trips/op | commands in scripts/op | Redis µs/op | × Lua floor | Redis process CPU µs/op | B/key @100 | B/key @1000 |\n")
	fmt.Fprintf(b, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	pingNs := s.get(ping+"/seq", "sec/op")
	incrNs := s.get(incrExp+"/seq", "sec/op")
	floorUs := s.get(luaFloor+"/seq", "redis-usec/op")
	for _, name := range subjects(s) {
		seq, par := name+"/seq", name+"/par"
		ns := s.get(seq, "sec/op")
		us := s.get(seq, "redis-usec/op")
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			name,
			num(ns*1e9, 0), ratio(ns, pingNs), ratio(ns, incrNs),
			num(s.get(seq, "allocs/op"), 0),
			num(1/s.get(par, "sec/op"), 0),
			num(s.get(seq, "roundtrips/op"), 2),
			num(s.get(seq, "inner-calls/op"), 1),
			num(us, 2), ratio(us, floorUs),
			num(s.get(seq, "redis-cpu-usec/op"), 1),
			num(mem.get(memoryName(name), "B/key@100"), 0),
			num(mem.get(memoryName(name), "B/key@1000"), 0))
	}
}

// throughputTable prints BenchmarkThroughput's rows and the ceiling from
// BenchmarkCeiling, all from the run of bench/peers.
func throughputTable(b *strings.Builder, s *stats) {
	ceil := s.get(ceiling, "calls/s")
	fmt.Fprintf(b, "Decisions per second by exactly 1, 8 and 64 goroutines, each decision on the next of 10,000 keys "+
		"of a token bucket that never denies (1,000,000 a second, burst 1,000,000), every subject on a go-redis client "+
		"built with default options, in one process; rueidislimiter (a fixed window of 2^40 calls an hour, two keys per id) "+
		"and redislimit's script sent by rueidis run on a rueidis client of their own with rueidis's defaults "+
		"(client-side caching off), and their round trips are the commands they send, which rueidis pipelines by itself. "+
		"× redis_rate and × redislimit compare with those rows at the "+
		"same goroutine count; the share of the ceiling compares with redis-benchmark -P 64 running the same script "+
		"by EVALSHA, with the same arguments, on the same server (%s calls/s). Round trips, script calls and Redis CPU "+
		"are per decision.\n\n", num(ceil, 0))
	fmt.Fprintf(b, "| subject | goroutines | decisions/s | × redis_rate | × redislimit | share of ceiling | round trips | script calls | Redis process CPU µs | ns/op | allocs/op |\n")
	fmt.Fprintf(b, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, sub := range throughputSubjects {
		for _, g := range throughputGoroutines {
			n := spread(sub.name, g)
			dps := s.get(n, "decisions/s")
			share := "–"
			if !math.IsNaN(dps) && !math.IsNaN(ceil) && ceil > 0 {
				share = fmt.Sprintf("%.0f%%", 100*dps/ceil)
			}
			fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				sub.desc, g, num(dps, 0),
				ratio(dps, s.get(spread("redis_rate", g), "decisions/s")),
				ratio(dps, s.get(spread("redislimit", g), "decisions/s")),
				share,
				num(s.get(n, "roundtrips/op"), 3),
				num(s.get(n, "script-calls/op"), 2),
				num(s.get(n, "redis-cpu-usec/op"), 1),
				num(s.get(n, "sec/op")*1e9, 0),
				num(s.get(n, "allocs/op"), 0))
		}
	}
	fmt.Fprintf(b, "| ceiling: redis-benchmark -P 64, 50 connections | – | %s | – | – | 100%% | – | 1.00 | – | – | – |\n", num(ceil, 0))
	if math.IsNaN(ceil) {
		fmt.Fprintf(b, "\nNo ceiling: redis-benchmark was not installed or the target was not a Redis server (see the benchmark log).\n")
	}
}

// denyCacheTable prints BenchmarkDenyCache's rows, from the run of bench/.
func denyCacheTable(b *strings.Builder, s *stats) {
	fmt.Fprintf(b, "Calls on one token-bucket key exhausted beforehand by another limiter, by 1 and 64 goroutines, "+
		"every call denied, without and with WithDenyCache(1000) (which starts empty). Script calls are the EVALSHA "+
		"and EVAL calls Redis ran (INFO commandstats), per decision.\n\n")
	fmt.Fprintf(b, "| deny cache | goroutines | ns/op | decisions/s | script calls/decision | round trips/decision | allocs/op | speed-up |\n")
	fmt.Fprintf(b, "|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, mode := range []string{"off", "on"} {
		for _, g := range []int{1, 64} {
			n := fmt.Sprintf("%s%s/g%d", denyCache, mode, g)
			off := fmt.Sprintf("%soff/g%d", denyCache, g)
			ns := s.get(n, "sec/op")
			fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %s | %s |\n",
				mode, g, num(ns*1e9, 0), num(s.get(n, "decisions/s"), 0),
				num(s.get(n, "script-calls/op"), 4), num(s.get(n, "roundtrips/op"), 4),
				num(s.get(n, "allocs/op"), 0), ratio(s.get(off, "sec/op"), ns))
		}
	}
}

// allowManyTable prints BenchmarkAllowMany's rows, from the run of bench/.
func allowManyTable(b *strings.Builder, s *stats) {
	fmt.Fprintf(b, "One AllowMany of 1,000 keys against 1,000 Allow calls in a row, on a token bucket that never denies, "+
		"on a client with default options, one goroutine.\n\n")
	fmt.Fprintf(b, "| way | ns per 1,000 decisions | round trips | script calls/decision | Redis µs per 1,000 | allocs per 1,000 | speed-up |\n")
	fmt.Fprintf(b, "|---|---:|---:|---:|---:|---:|---:|\n")
	seq := s.get(allowSeq, "sec/op")
	for _, r := range []struct{ name, desc string }{
		{allowMany, "AllowMany(1,000 keys)"},
		{allowSeq, "1,000 × Allow"},
	} {
		ns := s.get(r.name, "sec/op")
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n",
			r.desc, num(ns*1e9, 0), num(s.get(r.name, "roundtrips/op"), 2),
			num(s.get(r.name, "script-calls/decision"), 2), num(s.get(r.name, "redis-usec/op"), 0),
			num(s.get(r.name, "allocs/op"), 0), ratio(seq, ns))
	}
}

// short is the name in BenchmarkAllVsParts's units of each part, and
// alls are the Redislimit rows of redislimit.All, each with the rows of
// its parts: both from the harness's Algorithms table.
var short, alls = fromHarness()

// allRow is a Redislimit row of redislimit.All and the rows of its parts.
type allRow struct {
	name  string
	parts []string
}

func fromHarness() (map[string]string, []allRow) {
	short := map[string]string{}
	var alls []allRow
	for _, a := range harness.Algorithms() {
		if a.Parts == nil {
			continue
		}
		r := allRow{name: a.Name}
		for _, p := range a.Parts {
			short[p.Name] = p.Short
			r.parts = append(r.parts, p.Name)
		}
		alls = append(alls, r)
	}
	return short, alls
}

// dearest returns the largest of a unit's medians over the Redislimit
// rows parts, in regime key, and that row's name.
func dearest(s *stats, parts []string, key, unit string) (float64, string) {
	v, name := math.NaN(), ""
	for _, p := range parts {
		if u := s.get("Redislimit/"+p+"/"+key+"/seq", unit); math.IsNaN(v) || u > v {
			v, name = u, p
		}
	}
	return v, name
}

// allTable prints, for each All row and regime, the Redis time of one
// decision by All and by each of its parts alone, all from the run of
// bench/: from BenchmarkRedislimit's rows, separate benchmarks, and from
// BenchmarkAllVsParts, where the subjects take turns within one benchmark.
func allTable(b *strings.Builder, s *stats) {
	fmt.Fprintf(b, "Redis time per decision (INFO commandstats, µs, one goroutine) of redislimit.All against each of its parts alone, "+
		"on a key whose limits are never reached (every part allows) and on a saturated key (every part denies): "+
		"first from BenchmarkRedislimit's rows, run one after another, then from BenchmarkAllVsParts, where All and its parts "+
		"take turns of 500 calls within one benchmark, so that load on the machine falls on each alike (its ratio is the "+
		"figure to trust on a busy machine). × dearer part divides All's time by the largest of its parts'.\n\n")
	fmt.Fprintf(b, "| All | regime | All µs | parts alone, µs | × dearer part | turns: All µs | turns: parts alone, µs | turns: × dearer part | commands in scripts/op |\n")
	fmt.Fprintf(b, "|---|---|---:|---|---:|---:|---|---:|---:|\n")
	for _, a := range alls {
		for _, key := range []string{"allowed", "saturated"} {
			n := "Redislimit/" + a.name + "/" + key + "/seq"
			turns := allVsParts + a.name + "/" + key
			us := s.get(n, "redis-usec/op")
			var parts, turnParts []string
			for _, p := range a.parts {
				parts = append(parts, p+" "+num(s.get("Redislimit/"+p+"/"+key+"/seq", "redis-usec/op"), 2))
				turnParts = append(turnParts, p+" "+num(s.get(turns, short[p]+"-redis-usec/op"), 2))
			}
			dear, _ := dearest(s, a.parts, key, "redis-usec/op")
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", a.name, key, num(us, 2),
				strings.Join(parts, ", "), ratio(us, dear),
				num(s.get(turns, "all-redis-usec/op"), 2), strings.Join(turnParts, ", "),
				times(s.get(turns, "all/dearer-part")),
				num(s.get(n, "inner-calls/op"), 1))
		}
	}
}

func num(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// times formats a ratio already computed, as ratio does.
func times(x float64) string { return ratio(x, 1) }

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// targets checks the published goals against the medians: bench is the
// run of bench/, peers the run of bench/peers (whose Redislimit rows sit
// beside the peers in one process).
func targets(b *strings.Builder, bench, peers *stats) {
	fmt.Fprintf(b, "| target | figure | met |\n|---|---|---|\n")
	row := func(target, figure string, ok bool, known bool) {
		verdict := "yes"
		switch {
		case !known:
			verdict = "not measured"
		case !ok:
			verdict = "**no**"
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", target, figure, verdict)
	}
	known := func(vs ...float64) bool {
		for _, v := range vs {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return false
			}
		}
		return true
	}
	algs := []struct {
		name          string
		floorX        float64
		incrExpFaster bool
	}{
		{"fixed-window", 2, true},
		{"token-bucket", 2.5, true},
		{"sliding-log", 4, false},
	}
	for _, a := range algs {
		for _, key := range []string{"allowed", "saturated"} {
			n := "Redislimit/" + a.name + "/" + key + "/seq"
			us, floor := bench.get(n, "redis-usec/op"), bench.get(luaFloor+"/seq", "redis-usec/op")
			row(fmt.Sprintf("%s %s: Redis CPU ≤ %.1f× the Lua floor", a.name, key, a.floorX),
				fmt.Sprintf("%s µs / %s µs = %s", num(us, 2), num(floor, 2), ratio(us, floor)),
				us <= a.floorX*floor, known(us, floor))
		}
	}
	// All of two parts against the dearer part, from the turns of
	// BenchmarkAllVsParts, which load on the machine skews the least.
	for _, key := range []string{"allowed", "saturated"} {
		a := alls[0]
		turns := allVsParts + a.name + "/" + key
		x := bench.get(turns, "all/dearer-part")
		us := bench.get(turns, "all-redis-usec/op")
		var parts []string
		for _, p := range a.parts {
			parts = append(parts, p+" "+num(bench.get(turns, short[p]+"-redis-usec/op"), 2)+" µs")
		}
		row(fmt.Sprintf("%s %s: Redis CPU ≤ 1.3× the dearer part alone", a.name, key),
			fmt.Sprintf("%s µs against %s: %s", num(us, 2), strings.Join(parts, ", "), times(x)),
			x <= 1.3, known(x))
	}
	// vsRedisRate compares a seq figure of ours with redis_rate's, from the
	// same process: ours ≤ x × theirs.
	vsRedisRate := func(what, unit string, scale float64, sym string, x func(name string) float64) {
		for _, a := range algs {
			for _, key := range []string{"allowed", "saturated"} {
				ours := scale * peers.get("Redislimit/"+a.name+"/"+key+"/seq", unit)
				rr := scale * peers.get(redisRate+"/"+key+"/seq", unit)
				row(fmt.Sprintf("%s %s: %s ≤ %.2f× redis_rate's", a.name, key, what, x(a.name)),
					fmt.Sprintf("%s %s / %s %s = %s", num(ours, 2), sym, num(rr, 2), sym, ratio(ours, rr)),
					ours <= x(a.name)*rr, known(ours, rr))
			}
		}
	}
	rrX := map[string]float64{"fixed-window": 0.6, "token-bucket": 0.6, "sliding-log": 0.75}
	vsRedisRate("Redis CPU", "redis-usec/op", 1, "µs", func(n string) float64 { return rrX[n] })
	vsRedisRate("client time", "sec/op", 1e6, "µs", func(string) float64 { return 1 })
	for _, a := range algs {
		if !a.incrExpFaster {
			continue
		}
		ours := bench.get("Redislimit/"+a.name+"/allowed/seq", "sec/op")
		naive := bench.get(incrExp+"/seq", "sec/op")
		row(fmt.Sprintf("%s: ≥ 1.5× faster than INCR+EXPIRE", a.name),
			fmt.Sprintf("%s ns vs %s ns: %s faster", num(ours*1e9, 0), num(naive*1e9, 0), ratio(naive, ours)),
			naive >= 1.5*ours, known(ours, naive))
	}
	for _, a := range algs {
		for _, key := range []string{"allowed", "saturated"} {
			n := "Redislimit/" + a.name + "/" + key + "/seq"
			allocs := bench.get(n, "allocs/op")
			row(fmt.Sprintf("%s %s: ≤ 12 allocs/op", a.name, key), num(allocs, 0), allocs <= 12, known(allocs))
		}
	}
	for _, a := range algs {
		ours := 1 / peers.get("Redislimit/"+a.name+"/allowed/par", "sec/op")
		rr := 1 / peers.get(redisRate+"/allowed/par", "sec/op")
		row(fmt.Sprintf("%s: parallel throughput ≥ 1.3× redis_rate's", a.name),
			fmt.Sprintf("%s/s vs %s/s = %s", num(ours, 0), num(rr, 0), ratio(ours, rr)),
			ours >= 1.3*rr, known(ours, rr))
	}
	// Issue #9: throughput, the ceiling, the lone decision, the deny
	// cache and AllowMany, each from one process's run.
	ours64 := peers.get(spread("redislimit", 64), "decisions/s")
	rr64 := peers.get(spread("redis_rate", 64), "decisions/s")
	ceil := peers.get(ceiling, "calls/s")
	row("token-bucket, 64 goroutines on 10,000 keys: decisions/s ≥ 3× redis_rate's",
		fmt.Sprintf("%s/s vs %s/s = %s", num(ours64, 0), num(rr64, 0), ratio(ours64, rr64)),
		ours64 >= 3*rr64, known(ours64, rr64))
	row("token-bucket, 64 goroutines on 10,000 keys: ≥ 70% of the Redis-bound ceiling (redis-benchmark -P 64)",
		fmt.Sprintf("%s/s vs %s/s = %s", num(ours64, 0), num(ceil, 0), ratio(ours64, ceil)),
		ours64 >= 0.7*ceil, known(ours64, ceil))
	lone, rrLone := peers.get(spread("redislimit", 1), "sec/op"), peers.get(spread("redis_rate", 1), "sec/op")
	row("lone decision on a default-options client: client time ≤ 1.00× redis_rate's",
		fmt.Sprintf("%s µs / %s µs = %s", num(lone*1e6, 2), num(rrLone*1e6, 2), ratio(lone, rrLone)),
		lone <= rrLone, known(lone, rrLone))
	for _, g := range []string{"1 goroutine", "64 goroutines"} {
		n, _, _ := strings.Cut(g, " ")
		calls := bench.get(denyCache+"on/g"+n, "script-calls/op")
		row(fmt.Sprintf("deny cache, hot denied key, %s: ≤ 0.05 script calls per decision", g),
			num(calls, 4), calls <= 0.05, known(calls))
	}
	trips := bench.get(allowMany, "roundtrips/op")
	row("AllowMany of 1,000 keys: one round trip", num(trips, 2), trips <= 1, known(trips))
	many, seq := bench.get(allowMany, "sec/op"), bench.get(allowSeq, "sec/op")
	row("AllowMany of 1,000 keys: ≥ 10× faster than 1,000 Allow calls",
		fmt.Sprintf("%s ms vs %s ms: %s faster", num(many*1e3, 2), num(seq*1e3, 2), ratio(seq, many)),
		seq >= 10*many, known(many, seq))
	rrMem := peers.get(memoryName(redisRate+"/allowed"), "B/key@1000")
	for _, a := range algs[:2] {
		ours := bench.get(memoryName(a.name), "B/key@1000")
		row(fmt.Sprintf("%s: state per key ≤ redis_rate's", a.name),
			fmt.Sprintf("%s B vs %s B", num(ours, 0), num(rrMem, 0)),
			ours <= rrMem, known(ours, rrMem))
	}
	m100, m1000 := bench.get("KeyMemory/sliding-log", "B/key@100"), bench.get("KeyMemory/sliding-log", "B/key@1000")
	per := (m1000 - m100) / 900
	tb := bench.get("KeyMemory/token-bucket", "B/key@1000")
	fmt.Fprintf(b, "\nSliding log state grows with the units admitted in the last window: %s B after 100 calls, %s B after 1000, "+
		"about %s B per entry once past the compact encoding (128 entries). A key at a limit of 10,000 can hold about %s kB "+
		"where a token bucket holds %s B for any limit: above a limit of a few hundred per key, prefer TokenBucket.\n",
		num(m100, 0), num(m1000, 0), num(per, 0), num(per*10000/1000, 0), num(tb, 0))
}
