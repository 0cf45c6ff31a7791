// Package redistest starts Redis servers for tests, in the spirit of
// net/http/httptest: a real redis-server on a free loopback port in a
// temporary directory, or an embedded miniredis, each stopped by t.Cleanup.
// [StartCluster], [StartSentinel] and [StartRing] start several real
// servers as a Redis Cluster, a Sentinel-watched master and replica, or
// the shards of a client-side ring.
//
// When redis-server is not installed, every Start function skips the test,
// unless the environment variable REDISLIMIT_REQUIRE_REDIS is "1", where it
// fails it. Servers listen on 127.0.0.1 only.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// RequireEnv is the environment variable that turns a missing redis-server
// into a test failure instead of a skip.
const RequireEnv = "REDISLIMIT_REQUIRE_REDIS"

// Required reports whether RequireEnv is set to "1".
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// ServerPath returns the path of redis-server, or "" when it is not installed.
func ServerPath() string {
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return ""
	}
	return p
}

// NeedServer skips tb when redis-server is missing, or fails it when
// [Required] is true. It returns the binary's path.
func NeedServer(tb testing.TB) string {
	tb.Helper()
	p := ServerPath()
	if p == "" {
		if Required() {
			tb.Fatalf("redis-server not found in PATH and %s=1", RequireEnv)
		}
		tb.Skip("redis-server not found in PATH; set " + RequireEnv + "=1 to make this a failure")
	}
	return p
}

// Server is a redis-server process owned by a test. Its methods are safe for
// concurrent use.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	port int
	pre  []string // arguments before the standard options, such as a config file
	args []string

	mu     sync.Mutex
	proc   *os.Process
	exited chan struct{} // closed when proc has exited
	ctl    *redis.Client // made by control, guarded by mu
}

// Start starts a redis-server on a free 127.0.0.1 port in tb.TempDir() and
// stops it when the test ends. Extra arguments are passed on its command
// line (for example "--maxmemory", "1mb").
func Start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	s, err := startServer(tb, NeedServer(tb), tb.TempDir(), nil, extra, FreePort)
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	return s
}

// startServer starts a server in dir on a port from pick and registers its
// Stop with tb.Cleanup. Another process may take the port between pick and
// bind, so a failed start is retried on a new port. It does not call tb's
// Fatal methods, so it may run on any goroutine.
func startServer(tb testing.TB, bin, dir string, pre, extra []string, pick func() (int, error)) (*Server, error) {
	s := &Server{tb: tb, bin: bin, dir: dir, pre: pre, args: extra}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if s.port, err = pick(); err != nil {
			continue
		}
		if err = s.start(); err == nil {
			tb.Cleanup(s.Stop)
			return s, nil
		}
	}
	return nil, err
}

// Addr returns the server's address, "127.0.0.1:port". It stays the same
// across [Server.Restart].
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// Port returns the server's TCP port.
func (s *Server) Port() int { return s.port }

// Dir returns the server's working directory.
func (s *Server) Dir() string { return s.dir }

// Client returns a new client for the server, closed when the test ends.
func (s *Server) Client(opts ...func(*redis.Options)) *redis.Client {
	return NewClient(s.tb, s.Addr(), opts...)
}

// Stop kills the server and waits for it to exit. Data is not saved.
// Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	_ = s.proc.Kill()
	<-s.exited
	s.proc = nil
}

// Restart stops the server and starts a fresh one on the same port, with an
// empty dataset and an empty script cache.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // the port may linger briefly
	}
	s.tb.Fatalf("redistest: restart: %v", err)
}

// running reports whether the server's process is up: it has started, has
// not been stopped and has not exited.
func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// control returns the client the helpers use to query and configure the
// server: short timeouts and no retries, so that a stopped server fails a
// poll quickly. It is made on first use and closed when the test ends.
func (s *Server) control() *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctl == nil {
		s.ctl = NewClient(s.tb, s.Addr(), func(o *redis.Options) {
			o.DialTimeout = time.Second
			o.ReadTimeout = 2 * time.Second
			o.WriteTimeout = 2 * time.Second
			o.MaxRetries = -1
			o.PoolSize = 2
		})
	}
	return s.ctl
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	args := append(append([]string{}, s.pre...),
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--logfile", "redis.log",
	)
	args = append(args, s.args...)
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited at start (%v): %s", waitErr, s.logTail())
		default:
		}
		if Ping(s.Addr()) == nil {
			s.proc, s.exited = cmd.Process, exited
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-exited
	return fmt.Errorf("redis-server did not answer within 10s: %s", s.logTail())
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, "\n")
}

// Ping sends one PING over a fresh connection to addr and waits at most a
// second for +PONG.
func Ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return errors.New("unexpected reply to PING: " + strings.TrimSpace(line))
	}
	return nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// NewClient returns a client for addr, closed when the test ends. Each opt
// may adjust the options first.
func NewClient(tb testing.TB, addr string, opts ...func(*redis.Options)) *redis.Client {
	tb.Helper()
	o := &redis.Options{Addr: addr}
	for _, f := range opts {
		f(o)
	}
	c := redis.NewClient(o)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Mini starts an embedded miniredis, closed when the test ends.
func Mini(tb testing.TB) *miniredis.Miniredis {
	tb.Helper()
	return miniredis.RunT(tb)
}

// Backend is one Redis a test can run against: an embedded miniredis or a
// real redis-server.
type Backend struct {
	// Name is "miniredis" or "redis-server".
	Name string
	// Addr is the backend's address on 127.0.0.1.
	Addr string
	// Mini is the embedded server, or nil for a real one.
	Mini *miniredis.Miniredis
	// Server is the real server, or nil for miniredis.
	Server *Server
}

// Real reports whether b is a real redis-server.
func (b Backend) Real() bool { return b.Server != nil }

// Client returns a new client for the backend, closed when the test ends.
func (b Backend) Client(tb testing.TB, opts ...func(*redis.Options)) *redis.Client {
	return NewClient(tb, b.Addr, opts...)
}

// ForEach runs f as a subtest against a fresh miniredis and a fresh real
// redis-server (skipped or failed as [NeedServer] says when the binary is
// missing).
func ForEach(t *testing.T, f func(t *testing.T, b Backend)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) {
		m := Mini(t)
		f(t, Backend{Name: "miniredis", Addr: m.Addr(), Mini: m})
	})
	t.Run("redis-server", func(t *testing.T) {
		s := Start(t)
		f(t, Backend{Name: "redis-server", Addr: s.Addr(), Server: s})
	})
}

// KeyCount returns the number of keys in the backend's database 0.
func KeyCount(tb testing.TB, c redis.Cmdable) int64 {
	tb.Helper()
	n, err := c.DBSize(context.Background()).Result()
	if err != nil {
		tb.Fatalf("DBSIZE: %v", err)
	}
	return n
}
