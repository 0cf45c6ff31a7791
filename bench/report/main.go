// Command report runs redislimit's benchmarks (bench/) and the peers'
// (bench/peers) in interleaved rounds, summarises them with benchstat, and
// writes a Markdown table to stdout and bench/RESULTS.md.
//
// Run it from the repository root:
//
//	go run ./bench/report            # 6 rounds of each package, about 10 minutes
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
)

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

func num(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

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
