// Package harness is the shared machinery of the benchmarks in bench/ and
// bench/peers: the Redis they measure, a command-counting go-redis hook,
// Redis CPU per operation from INFO commandstats, and benchmark bodies that
// check their fixtures.
//
// A benchmark process measures one Redis, opened once in TestMain by [Main]:
// the server at REDIS_ADDR when that is set (loopback addresses only), else a
// redis-server started on a free 127.0.0.1 port, else (with a loud warning,
// and only when REDISLIMIT_REQUIRE_REDIS is not "1") an embedded miniredis
// whose figures say nothing about Redis.
package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit/internal/redistest"
)

// AddrEnv is the environment variable naming an existing Redis to measure
// instead of starting one. Only loopback addresses are accepted.
const AddrEnv = "REDIS_ADDR"

// Kinds of [Target].
const (
	KindServer    = "redis-server" // started by this process
	KindExternal  = "REDIS_ADDR"   // an existing server on a loopback address
	KindMiniredis = "miniredis"    // embedded; its timings say nothing about Redis
)

// Target is the Redis a benchmark process measures. Its methods are safe for
// concurrent use.
type Target struct {
	// Addr is the server's address.
	Addr string
	// Kind is one of KindServer, KindExternal and KindMiniredis.
	Kind string
	// Version is the server's redis_version, or "" for miniredis.
	Version string

	admin *redis.Client
	mini  *miniredis.Miniredis
	tb    *processTB
	run   string // unique per process, so keys never collide across runs
	seq   atomic.Int64
}

// Real reports whether t is a Redis server, whose INFO commandstats and
// MEMORY USAGE figures mean something.
func (t *Target) Real() bool { return t.Kind != KindMiniredis }

// Admin returns a client without the counting hook, for fixture checks and
// statistics. It is closed by [Target.Close].
func (t *Target) Admin() *redis.Client { return t.admin }

// Mini returns the embedded server, or nil when t is a real server.
func (t *Target) Mini() *miniredis.Miniredis { return t.mini }

// Key returns a key unique to this process and call, starting with name.
func (t *Target) Key(name string) string {
	return fmt.Sprintf("%s:%s:%d", sanitize(name), t.run, t.seq.Add(1))
}

func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '{', '}', '*', '?', '[', ']', ' ', '\\':
			return '_'
		}
		return r
	}, name)
}

// Open returns the Redis to measure, as described in the package comment.
// warn receives the warnings a user must see (the miniredis fallback).
func Open(warn func(string)) (*Target, error) {
	t := &Target{run: strconv.FormatInt(time.Now().UnixNano()%1e10, 36)}
	if addr := os.Getenv(AddrEnv); addr != "" {
		if err := checkLoopback(addr); err != nil {
			return nil, err
		}
		t.Addr, t.Kind = addr, KindExternal
	} else if redistest.ServerPath() != "" {
		s, tb, err := startServer()
		if err != nil {
			return nil, err
		}
		t.Addr, t.Kind, t.tb = s.Addr(), KindServer, tb
	} else {
		if redistest.Required() {
			return nil, fmt.Errorf("harness: redis-server not found in PATH and %s=1", redistest.RequireEnv)
		}
		m, err := miniredis.Run()
		if err != nil {
			return nil, fmt.Errorf("harness: start miniredis: %w", err)
		}
		t.Addr, t.Kind, t.mini = m.Addr(), KindMiniredis, m
		warn(strings.Repeat("!", 78) + "\n" +
			"WARNING: redis-server is not installed; benchmarking an embedded miniredis.\n" +
			"These figures say NOTHING about Redis: no Redis CPU, no memory per key, and\n" +
			"timings of a Go map behind a socket; allocs/op include miniredis's own.\n" +
			"Install redis-server or set " + AddrEnv + ".\n" +
			strings.Repeat("!", 78))
	}
	t.admin = redis.NewClient(&redis.Options{Addr: t.Addr})
	if t.Real() {
		v, err := serverVersion(context.Background(), t.admin)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("harness: %s: %w", t.Addr, err)
		}
		t.Version = v
	}
	return t, nil
}

// checkLoopback accepts host:port only when host is 127.0.0.1, localhost or
// ::1: benchmarks send load, and load goes nowhere but this machine.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("harness: %s=%q: %w", AddrEnv, addr, err)
	}
	switch host {
	case "127.0.0.1", "localhost", "::1":
		return nil
	}
	return fmt.Errorf("harness: %s=%q: only 127.0.0.1, localhost and [::1] are accepted", AddrEnv, addr)
}

func serverVersion(ctx context.Context, c *redis.Client) (string, error) {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v, nil
		}
	}
	return "", errors.New("INFO server has no redis_version")
}

// Close stops what Open started and closes the admin client.
func (t *Target) Close() {
	if t.admin != nil {
		_ = t.admin.Close()
	}
	if t.mini != nil {
		t.mini.Close()
	}
	if t.tb != nil {
		t.tb.cleanup()
	}
}

// Client returns a client for the target that counts what it sends in ctr
// (when not nil), with room for poolSize connections, closed when tb ends.
// A non-nil opts adjusts the options first.
func (t *Target) Client(tb testing.TB, ctr *Counter, poolSize int, opts func(*redis.Options)) *redis.Client {
	tb.Helper()
	o := &redis.Options{Addr: t.Addr, PoolSize: poolSize}
	if opts != nil {
		opts(o)
	}
	c := redis.NewClient(o)
	if ctr != nil {
		c.AddHook(ctr)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Describe is a one-line description of the target for logs and reports.
func (t *Target) Describe() string {
	if !t.Real() {
		return "miniredis at " + t.Addr + " (NOT Redis: timings are meaningless)"
	}
	return fmt.Sprintf("Redis %s (%s) at %s", t.Version, t.Kind, t.Addr)
}

// Main opens the target, stores it in *dst, runs the tests and benchmarks,
// closes the target and exits. Call it from TestMain.
func Main(m *testing.M, dst **Target) {
	t, err := Open(func(s string) { fmt.Fprintln(os.Stderr, s) })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*dst = t
	// A configuration line in the benchmark format, so that the report
	// (and benchstat) know what was measured.
	fmt.Printf("redis: %s\n", strings.ReplaceAll(t.Describe(), " at "+t.Addr, ""))
	code := m.Run()
	t.Close()
	os.Exit(code)
}

// startServer starts a redis-server with redistest.Start, which wants a
// testing.TB; TestMain has none, so processTB stands in for one that lives
// as long as the process.
func startServer() (s *redistest.Server, tb *processTB, err error) {
	tb = &processTB{}
	defer func() {
		if r := recover(); r != nil {
			tb.cleanup()
			s, err = nil, fmt.Errorf("harness: %v", r)
		}
	}()
	return redistest.Start(tb), tb, nil
}

// processTB is the testing.TB that redistest.Start needs, for a server that
// lives as long as the benchmark process. It implements the methods Start
// and Server use; the embedded nil interface makes any other call panic,
// which startServer turns into an error.
type processTB struct {
	testing.TB
	dir      string
	cleanups []func()
}

func (p *processTB) Helper()                        {}
func (p *processTB) Cleanup(f func())               { p.cleanups = append(p.cleanups, f) }
func (p *processTB) Fatalf(format string, a ...any) { panic(fmt.Sprintf(format, a...)) }
func (p *processTB) Fatal(a ...any)                 { panic(fmt.Sprint(a...)) }
func (p *processTB) Skip(a ...any)                  { panic(fmt.Sprint(a...)) }
func (p *processTB) Logf(format string, a ...any)   { fmt.Fprintf(os.Stderr, format+"\n", a...) }

func (p *processTB) TempDir() string {
	if p.dir == "" {
		d, err := os.MkdirTemp("", "redislimit-bench-")
		if err != nil {
			panic(err)
		}
		p.dir = d
		p.Cleanup(func() { _ = os.RemoveAll(d) })
	}
	return p.dir
}

// cleanup runs the registered functions, last first, as testing does.
func (p *processTB) cleanup() {
	for i := len(p.cleanups) - 1; i >= 0; i-- {
		p.cleanups[i]()
	}
	p.cleanups = nil
}
