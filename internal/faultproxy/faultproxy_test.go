package faultproxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redislimit/redislimit/internal/faultproxy"
	"github.com/redislimit/redislimit/internal/leakcheck"
	"github.com/redislimit/redislimit/internal/redistest"
)

// setup starts a redis-server and a proxy in front of it.
func setup(t *testing.T) (*redistest.Server, *faultproxy.Proxy) {
	t.Helper()
	srv := redistest.Start(t)
	return srv, faultproxy.Start(t, srv.Addr())
}

// noRetries makes a client report the first failure instead of retrying it.
func noRetries(o *redis.Options) { o.MaxRetries = -1 }

// oneConn makes a client reuse a single connection.
func oneConn(o *redis.Options) { o.PoolSize = 1; o.MinIdleConns = 0 }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// rawConn is a plain TCP connection speaking inline Redis commands, for
// watching exactly what the proxy forwards.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawConn) send(cmd string) {
	rc.t.Helper()
	if _, err := rc.c.Write([]byte(cmd + "\r\n")); err != nil {
		rc.t.Fatalf("write %q: %v", cmd, err)
	}
}

// readLine reads one reply line, waiting at most d.
func (rc *rawConn) readLine(d time.Duration) (string, error) {
	_ = rc.c.SetReadDeadline(time.Now().Add(d))
	line, err := rc.r.ReadString('\n')
	return strings.TrimSpace(line), err
}

// getInt reads key straight from srv, bypassing the proxy; a missing key is 0.
func getInt(t *testing.T, c *redis.Client, key string) int {
	t.Helper()
	n, err := c.Get(context.Background(), key).Int()
	if errors.Is(err, redis.Nil) {
		return 0
	}
	if err != nil {
		t.Fatalf("GET %s on the server: %v", key, err)
	}
	return n
}

func TestForward(t *testing.T) {
	_, p := setup(t)
	c := redistest.NewClient(t, p.Addr())
	ctx := context.Background()

	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB: many chunks, flow control
	tests := []struct{ key, value string }{
		{"small", "v"},
		{"empty", ""},
		{"big", big},
	}
	for _, tt := range tests {
		if err := c.Set(ctx, tt.key, tt.value, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", tt.key, err)
		}
		got, err := c.Get(ctx, tt.key).Result()
		if err != nil {
			t.Fatalf("GET %s: %v", tt.key, err)
		}
		if got != tt.value {
			t.Errorf("GET %s returned %d bytes, want %d", tt.key, len(got), len(tt.value))
		}
	}

	// A pipeline larger than the proxy's buffers must not deadlock.
	cmds, err := c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i := 0; i < 20; i++ {
			pipe.Get(ctx, "big")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	for i, cmd := range cmds {
		if got := cmd.(*redis.StringCmd).Val(); got != big {
			t.Fatalf("pipelined GET %d returned %d bytes, want %d", i, len(got), len(big))
		}
	}

	if p.Conns() < 1 || p.Accepted() < 1 {
		t.Errorf("Conns() = %d, Accepted() = %d with a client connected; want both ≥ 1", p.Conns(), p.Accepted())
	}
}

func TestLatency(t *testing.T) {
	_, p := setup(t)
	c := redistest.NewClient(t, p.Addr(), oneConn)
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil { // dial outside the measurement
		t.Fatalf("PING: %v", err)
	}

	const latency = 100 * time.Millisecond
	p.SetLatency(latency)
	if got := p.Latency(); got != latency {
		t.Fatalf("Latency() = %v after SetLatency(%v)", got, latency)
	}
	start := time.Now()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if took := time.Since(start); took < latency {
		t.Errorf("SET took %v with latency %v, want at least the latency", took, latency)
	}

	start = time.Now()
	_, err := c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i := 0; i < 50; i++ {
			pipe.Incr(ctx, "n")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	if took := time.Since(start); took < latency {
		t.Errorf("pipeline took %v with latency %v, want at least the latency", took, latency)
	}

	p.Heal()
	if got := p.Latency(); got != 0 {
		t.Errorf("Latency() = %v after Heal, want 0", got)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Heal: %v", err)
	}
}

func TestStall(t *testing.T) {
	srv, p := setup(t)
	direct := srv.Client()
	c := redistest.NewClient(t, p.Addr(), oneConn, noRetries, func(o *redis.Options) {
		o.ReadTimeout = 200 * time.Millisecond
		o.DialTimeout = 200 * time.Millisecond
	})
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	held := dialRaw(t, p.Addr())
	held.send("PING")
	if line, err := held.readLine(time.Second); err != nil || line != "+PONG" {
		t.Fatalf("PING on a raw connection = %q, %v", line, err)
	}

	p.Stall()

	// An existing connection gets no reply.
	start := time.Now()
	err := c.Get(ctx, "k").Err()
	if !isTimeout(err) {
		t.Fatalf("GET while stalled: err = %v, want a timeout", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("GET while stalled took %v, want about the 200ms read timeout", took)
	}

	// A new connection is accepted but never answered.
	fresh := dialRaw(t, p.Addr())
	fresh.send("PING")
	if _, err := fresh.readLine(200 * time.Millisecond); !isTimeout(err) {
		t.Fatalf("PING on a connection made while stalled: err = %v, want a timeout", err)
	}

	// A command in flight is held, not forwarded: the server never sees it
	// while the stall lasts.
	held.send("INCR stalled")
	time.Sleep(100 * time.Millisecond)
	if n := getInt(t, direct, "stalled"); n != 0 {
		t.Fatalf("server ran a command sent during the stall: stalled = %d", n)
	}
	if _, err := held.readLine(100 * time.Millisecond); !isTimeout(err) {
		t.Fatalf("reading while stalled: err = %v, want a timeout", err)
	}

	// Heal forwards what was held, in order.
	p.Heal()
	if line, err := held.readLine(2 * time.Second); err != nil || line != ":1" {
		t.Errorf("held INCR after Heal = %q, %v; want \":1\"", line, err)
	}
	if line, err := fresh.readLine(2 * time.Second); err != nil || line != "+PONG" {
		t.Errorf("held PING after Heal = %q, %v; want \"+PONG\"", line, err)
	}
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Errorf("SET after Heal: %v", err)
	}
}

func TestStallReplies(t *testing.T) {
	srv, p := setup(t)
	direct := srv.Client()
	rc := dialRaw(t, p.Addr())

	p.StallReplies()
	rc.send("INCR ran")
	// The command reaches the server and runs ...
	deadline := time.Now().Add(2 * time.Second)
	for getInt(t, direct, "ran") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("INCR sent during StallReplies did not reach the server")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// ... but its reply is held until Heal.
	if line, err := rc.readLine(100 * time.Millisecond); !isTimeout(err) {
		t.Fatalf("reading during StallReplies = %q, %v; want a timeout", line, err)
	}
	p.Heal()
	if line, err := rc.readLine(2 * time.Second); err != nil || line != ":1" {
		t.Errorf("held reply after Heal = %q, %v; want \":1\"", line, err)
	}
}

func TestCutAll(t *testing.T) {
	t.Run("in-flight command fails", func(t *testing.T) {
		srv, p := setup(t)
		direct := srv.Client()
		c := redistest.NewClient(t, p.Addr(), oneConn, noRetries)
		ctx := context.Background()

		// BLPOP stays in flight on the server for 10s unless cut.
		done := make(chan error, 1)
		go func() { done <- c.BLPop(ctx, 10*time.Second, "nothing").Err() }()
		deadline := time.Now().Add(2 * time.Second)
		for !strings.Contains(direct.Info(ctx, "clients").Val(), "blocked_clients:1") {
			if time.Now().After(deadline) {
				t.Fatal("BLPOP did not block on the server")
			}
			time.Sleep(5 * time.Millisecond)
		}

		p.CutAll()
		if n := p.Conns(); n != 0 {
			t.Errorf("Conns() = %d after CutAll, want 0", n)
		}
		select {
		case err := <-done:
			if err == nil || errors.Is(err, redis.Nil) {
				t.Errorf("BLPOP cut in flight: err = %v, want a connection error", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("BLPOP still waiting 5s after CutAll")
		}

		// The client reconnects by itself.
		if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Errorf("SET after CutAll: %v", err)
		}
		if p.Accepted() < 2 {
			t.Errorf("Accepted() = %d, want a second connection", p.Accepted())
		}
	})

	t.Run("idle connection is replaced", func(t *testing.T) {
		_, p := setup(t)
		c := redistest.NewClient(t, p.Addr(), oneConn, noRetries)
		ctx := context.Background()
		for i := 0; i < 5; i++ {
			if err := c.Ping(ctx).Err(); err != nil {
				t.Fatalf("PING %d: %v", i, err)
			}
			p.CutAll()
			// go-redis checks an idle connection before reuse and dials anew.
			if err := c.Ping(ctx).Err(); err != nil {
				t.Fatalf("PING %d after cutting the idle connection: %v", i, err)
			}
		}
		if got := p.Accepted(); got != 6 {
			t.Errorf("Accepted() = %d after 5 cuts, want 6", got)
		}
	})

	t.Run("stall then cut drops held data", func(t *testing.T) {
		srv, p := setup(t)
		direct := srv.Client()
		c := redistest.NewClient(t, p.Addr(), noRetries, func(o *redis.Options) {
			o.ReadTimeout = 200 * time.Millisecond
		})
		ctx := context.Background()
		rc := dialRaw(t, p.Addr())

		p.Stall()
		rc.send("INCR dropped")
		if err := c.Incr(ctx, "dropped").Err(); !isTimeout(err) {
			t.Fatalf("INCR while stalled: err = %v, want a timeout", err)
		}
		p.CutAll()
		p.Heal()

		if line, err := rc.readLine(2 * time.Second); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("reading a cut connection = %q, %v; want EOF or reset", line, err)
		}
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatalf("PING after CutAll and Heal: %v", err)
		}
		if n := getInt(t, direct, "dropped"); n != 0 {
			t.Errorf("held commands reached the server after CutAll: dropped = %d, want 0", n)
		}
	})
}

func TestRefuse(t *testing.T) {
	_, p := setup(t)
	ctx := context.Background()
	kept := redistest.NewClient(t, p.Addr(), oneConn)
	if err := kept.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}

	p.Refuse()

	start := time.Now()
	_, err := net.DialTimeout("tcp", p.Addr(), 2*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while refusing: err = %v, want connection refused", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("refused dial took %v, want it to fail at once", took)
	}

	fresh := redistest.NewClient(t, p.Addr(), noRetries, func(o *redis.Options) { o.DialerRetries = 1 })
	if err := fresh.Ping(ctx).Err(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("PING on a new client while refusing: err = %v, want connection refused", err)
	}
	// Connections made before Refuse keep working.
	if err := kept.Ping(ctx).Err(); err != nil {
		t.Errorf("PING on a connection made before Refuse: %v", err)
	}

	p.Heal()
	if err := fresh.Ping(ctx).Err(); err != nil {
		t.Errorf("PING on a new client after Heal: %v", err)
	}
}

// TestKillAndMove plays a server killed and brought back on another port.
func TestKillAndMove(t *testing.T) {
	first, p := setup(t)
	c := redistest.NewClient(t, p.Addr(), noRetries, func(o *redis.Options) {
		o.DialerRetries = 1
		o.ReadTimeout = 500 * time.Millisecond
	})
	ctx := context.Background()
	if err := c.Set(ctx, "where", "first", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}

	p.Refuse()
	p.CutAll()
	if err := c.Get(ctx, "where").Err(); err == nil {
		t.Fatal("GET succeeded with the server killed")
	}

	second := redistest.Start(t)
	p.SetTarget(second.Addr())
	if got := p.Target(); got != second.Addr() {
		t.Fatalf("Target() = %q after SetTarget(%q)", got, second.Addr())
	}
	p.Heal()
	if err := c.Get(ctx, "where").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("GET on the new server: err = %v, want redis.Nil", err)
	}
	if err := c.Set(ctx, "where", "second", 0).Err(); err != nil {
		t.Fatalf("SET on the new server: %v", err)
	}
	if got := second.Client().Get(ctx, "where").Val(); got != "second" {
		t.Errorf("new server has where = %q, want \"second\"", got)
	}
	if got := first.Client().Get(ctx, "where").Val(); got != "first" {
		t.Errorf("old server has where = %q, want \"first\"", got)
	}
}

// TestNoLeak runs traffic from several clients while faults come and go,
// then checks that closing the proxy ends every goroutine it started.
func TestNoLeak(t *testing.T) {
	srv := redistest.Start(t)
	check := leakcheck.Goroutines(t)

	p := faultproxy.Start(t, srv.Addr())
	ctx := context.Background()
	var clients []*redis.Client
	for i := 0; i < 4; i++ {
		clients = append(clients, redis.NewClient(&redis.Options{
			Addr:          p.Addr(),
			PoolSize:      4,
			MaxRetries:    -1,
			DialerRetries: 1,
			DialTimeout:   100 * time.Millisecond,
			ReadTimeout:   100 * time.Millisecond,
			WriteTimeout:  100 * time.Millisecond,
		}))
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, failed int
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[i%len(clients)]
			key := fmt.Sprintf("leak:%d", i)
			for n := 0; n < 10000; n++ { // bounded; stop normally ends it first
				select {
				case <-stop:
					return
				default:
				}
				err := c.Incr(ctx, key).Err()
				mu.Lock()
				if err == nil {
					ok++
				} else {
					failed++
				}
				mu.Unlock()
			}
		}()
	}

	// Connections left held in every state when the proxy closes.
	raw := dialRaw(t, p.Addr())
	faults := []func(){
		func() { p.SetLatency(20 * time.Millisecond) },
		p.Stall,
		func() { raw.send("PING") },
		p.StallReplies,
		p.CutAll,
		p.Refuse,
		p.Heal,
		p.Stall,
		func() { dialRaw(t, p.Addr()).send("PING") },
		p.Refuse,
	}
	for _, f := range faults {
		f()
		time.Sleep(50 * time.Millisecond)
	}
	p.Heal()
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if ok == 0 || failed == 0 {
		t.Errorf("%d commands succeeded and %d failed; want some of each, or the faults did not bite", ok, failed)
	}
	// A go-redis pool that saw PoolSize dial errors in a row fails fast with
	// the last one until its background probe (once a second) gets through.
	deadline := time.Now().Add(3 * time.Second)
	for _, c := range clients {
		for err := c.Ping(ctx).Err(); err != nil; err = c.Ping(ctx).Err() {
			if time.Now().After(deadline) {
				t.Fatalf("PING 3s after Heal: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	p.Stall()
	dialRaw(t, p.Addr()).send("PING") // held when Close comes
	for _, c := range clients {
		_ = c.Close()
	}
	_ = raw.c.Close()
	p.Close()
	if n := p.Conns(); n != 0 {
		t.Errorf("Conns() = %d after Close, want 0", n)
	}
	check()
}

func TestConnsCountsHeldConnections(t *testing.T) {
	_, p := setup(t)
	p.Stall()
	for i := 0; i < 3; i++ {
		dialRaw(t, p.Addr())
	}
	deadline := time.Now().Add(2 * time.Second)
	for p.Conns() != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("Conns() = %d with 3 connections held by a stall, want 3", p.Conns())
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.CutAll()
	if n := p.Conns(); n != 0 {
		t.Errorf("Conns() = %d after CutAll, want 0", n)
	}
}
