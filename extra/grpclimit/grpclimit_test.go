package grpclimit_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/extra/grpclimit"
	"github.com/redislimit/redislimit/internal/redistest"
)

const (
	checkMethod = "/grpc.health.v1.Health/Check"
	watchMethod = "/grpc.health.v1.Health/Watch"
)

// counts are what a test server saw: attempts reached the server,
// handled reached the handler past the limit.
type counts struct {
	attempts, handled atomic.Int64
}

// serve starts a gRPC server with the health service on 127.0.0.1, limited
// by ic, and returns a client of it made with the dial options and the
// server's counts. Both are stopped when the test ends.
func serve(t *testing.T, ic *grpclimit.Interceptors, dial ...grpc.DialOption) (healthgrpc.HealthClient, *counts) {
	t.Helper()
	c := &counts{}
	before := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		c.attempts.Add(1)
		return h(ctx, req)
	}
	after := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		c.handled.Add(1)
		return h(ctx, req)
	}
	streamBefore := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		c.attempts.Add(1)
		return h(srv, ss)
	}
	streamAfter := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		c.handled.Add(1)
		return h(srv, ss)
	}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(before, ic.UnaryServer(), after),
		grpc.ChainStreamInterceptor(streamBefore, ic.StreamServer(), streamAfter),
	)
	healthgrpc.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return dialHealth(t, ln.Addr().String(), dial...), c
}

func dialHealth(t *testing.T, addr string, dial ...grpc.DialOption) healthgrpc.HealthClient {
	t.Helper()
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dial...)
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return healthgrpc.NewHealthClient(conn)
}

func newLimiter(t *testing.T, rdb redis.Scripter, alg redislimit.Algorithm, opts ...redislimit.Option) *redislimit.Limiter {
	t.Helper()
	lim, err := redislimit.New(rdb, alg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return lim
}

func newInterceptors(t *testing.T, lim *redislimit.Limiter, opts ...grpclimit.Option) *grpclimit.Interceptors {
	t.Helper()
	ic, err := grpclimit.New(lim, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return ic
}

func check(ctx context.Context, hc healthgrpc.HealthClient, opts ...grpc.CallOption) error {
	_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, opts...)
	return err
}

// denialDetails returns the RetryInfo and QuotaFailure of a denial, and
// fails the test when either is missing.
func denialDetails(t *testing.T, err error) (*errdetails.RetryInfo, *errdetails.QuotaFailure) {
	t.Helper()
	var ri *errdetails.RetryInfo
	var qf *errdetails.QuotaFailure
	for _, d := range status.Convert(err).Details() {
		switch d := d.(type) {
		case *errdetails.RetryInfo:
			ri = d
		case *errdetails.QuotaFailure:
			qf = d
		}
	}
	if ri == nil || qf == nil {
		t.Fatalf("details of %v: RetryInfo %v, QuotaFailure %v", err, ri, qf)
	}
	return ri, qf
}

// checkPushback checks the pushback trailer against the RetryInfo.
func checkPushback(t *testing.T, trailer metadata.MD, ri *errdetails.RetryInfo) {
	t.Helper()
	got := trailer.Get(grpclimit.RetryPushbackTrailer)
	d := ri.GetRetryDelay().AsDuration()
	want := strconv.FormatInt(int64((d+time.Millisecond-1)/time.Millisecond), 10)
	if len(got) != 1 || got[0] != want {
		t.Errorf("trailer %s = %q, want [%q] (RetryDelay %v)", grpclimit.RetryPushbackTrailer, got, want, d)
	}
}

func TestDenial(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		lim := newLimiter(t, b.Client(t), redislimit.FixedWindow(2, time.Minute))
		hc, c := serve(t, newInterceptors(t, lim))
		ctx := context.Background()
		for i := range 2 {
			if err := check(ctx, hc); err != nil {
				t.Fatalf("call %d: %v", i+1, err)
			}
		}
		var trailer metadata.MD
		err := check(ctx, hc, grpc.Trailer(&trailer))
		if code := status.Code(err); code != codes.ResourceExhausted {
			t.Fatalf("third call: %v, want ResourceExhausted", err)
		}
		ri, qf := denialDetails(t, err)
		if d := ri.GetRetryDelay().AsDuration(); d <= 0 || d > time.Minute {
			t.Errorf("RetryDelay %v, want within (0, 1m]", d)
		}
		if len(qf.Violations) != 1 || qf.Violations[0].Subject != grpclimit.SubjectPeer || qf.Violations[0].Description != "limit of 2 per 1m0s" {
			t.Errorf("QuotaFailure %v, want one violation of peer, limit of 2 per 1m0s", qf)
		}
		checkPushback(t, trailer, ri)
		if n := c.handled.Load(); n != 2 {
			t.Errorf("handler called %d times, want 2", n)
		}
	})
}

func TestWithCode(t *testing.T) {
	lim := newLimiter(t, redistest.NewClient(t, redistest.Mini(t).Addr()), redislimit.FixedWindow(1, time.Minute))
	hc, c := serve(t, newInterceptors(t, lim, grpclimit.WithCode(codes.Unavailable)))
	ctx := context.Background()
	if err := check(ctx, hc); err != nil {
		t.Fatal(err)
	}
	var trailer metadata.MD
	err := check(ctx, hc, grpc.Trailer(&trailer))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("second call: %v, want Unavailable", err)
	}
	ri, _ := denialDetails(t, err)
	checkPushback(t, trailer, ri)
	if n := c.handled.Load(); n != 1 {
		t.Errorf("handler called %d times, want 1", n)
	}
}

func TestShadowModeServes(t *testing.T) {
	lim := newLimiter(t, redistest.NewClient(t, redistest.Mini(t).Addr()), redislimit.FixedWindow(1, time.Minute), redislimit.WithShadowMode())
	hc, c := serve(t, newInterceptors(t, lim))
	for i := range 3 {
		if err := check(context.Background(), hc); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	if n := c.handled.Load(); n != 3 {
		t.Errorf("handler called %d times, want 3", n)
	}
}

func TestRedisDown(t *testing.T) {
	s := redistest.Start(t)
	lim := newLimiter(t, s.Client(), redislimit.FixedWindow(5, time.Minute))
	hc, c := serve(t, newInterceptors(t, lim, grpclimit.WithExempt(watchMethod)))
	ctx := context.Background()
	if err := check(ctx, hc); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	err := check(ctx, hc)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("with Redis down: %v, want Unavailable", err)
	}
	if n := c.handled.Load(); n != 1 {
		t.Errorf("handler called %d times, want 1 (before Redis stopped)", n)
	}
	// The stream is exempt, so the limiter is not asked.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Errorf("exempt stream with Redis down: %v", err)
	}
}

func TestExempt(t *testing.T) {
	rdb := redistest.NewClient(t, redistest.Mini(t).Addr())
	lim := newLimiter(t, rdb, redislimit.FixedWindow(1, time.Minute))
	hc, c := serve(t, newInterceptors(t, lim, grpclimit.WithExempt(checkMethod)))
	ctx := context.Background()
	for i := range 3 {
		if err := check(ctx, hc); err != nil {
			t.Fatalf("exempt call %d: %v", i+1, err)
		}
	}
	if n := c.handled.Load(); n != 3 {
		t.Errorf("handler called %d times, want 3", n)
	}
	if r, err := lim.Peek(ctx, "127.0.0.1"); err != nil || r.Remaining != 1 {
		t.Errorf("Peek(127.0.0.1) = %+v, %v: exempt calls were charged", r, err)
	}
}

func TestStreamServer(t *testing.T) {
	lim := newLimiter(t, redistest.NewClient(t, redistest.Mini(t).Addr()), redislimit.FixedWindow(1, time.Minute))
	hc, c := serve(t, newInterceptors(t, lim))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := first.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first stream: %v, %v", r, err)
	}
	second, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = second.Recv()
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second stream: %v, want ResourceExhausted", err)
	}
	ri, qf := denialDetails(t, err)
	if qf.Violations[0].Subject != grpclimit.SubjectPeer {
		t.Errorf("subject %q", qf.Violations[0].Subject)
	}
	checkPushback(t, second.Trailer(), ri)
	if n := c.handled.Load(); n != 1 {
		t.Errorf("stream handler called %d times, want 1", n)
	}
}

// TestKeysOverLoopback keys calls from a real client: the peer's address,
// or a forwarded one from a trusted peer, or a key function's.
func TestKeysOverLoopback(t *testing.T) {
	loopback := netip.MustParsePrefix("127.0.0.0/8")
	keyFromMetadata := func(ctx context.Context, _ string) (string, error) {
		if v := metadata.ValueFromIncomingContext(ctx, "api-key"); len(v) == 1 {
			return "api:" + v[0], nil
		}
		return "", errors.New("no api-key")
	}
	tests := []struct {
		name    string
		opts    []grpclimit.Option
		md      []string // outgoing metadata pairs
		wantKey string
		subject string
	}{
		{"peer", nil, nil, "127.0.0.1", grpclimit.SubjectPeer},
		{"forwarded from an untrusted peer", nil, []string{"x-forwarded-for", "203.0.113.7"}, "127.0.0.1", grpclimit.SubjectPeer},
		{"forwarded from a trusted peer", []grpclimit.Option{grpclimit.WithTrustedProxies(loopback)},
			[]string{"x-forwarded-for", "198.51.100.1, 203.0.113.7"}, "203.0.113.7", grpclimit.SubjectPeer},
		{"trusted peer, no header", []grpclimit.Option{grpclimit.WithTrustedProxies(loopback)}, nil, "127.0.0.1", grpclimit.SubjectPeer},
		{"key func", []grpclimit.Option{grpclimit.WithKeyFunc(keyFromMetadata)}, []string{"api-key", "k1"}, "api:k1", grpclimit.SubjectKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := newLimiter(t, redistest.NewClient(t, redistest.Mini(t).Addr()), redislimit.FixedWindow(1, time.Minute))
			hc, _ := serve(t, newInterceptors(t, lim, tt.opts...))
			ctx := metadata.AppendToOutgoingContext(context.Background(), tt.md...)
			if err := check(ctx, hc); err != nil {
				t.Fatal(err)
			}
			if r, err := lim.Peek(context.Background(), tt.wantKey); err != nil || r.Remaining != 0 {
				t.Errorf("Peek(%q) = %+v, %v: want the call charged to it", tt.wantKey, r, err)
			}
			_, qf := denialDetails(t, check(ctx, hc))
			if s := qf.Violations[0].Subject; s != tt.subject {
				t.Errorf("subject %q, want %q", s, tt.subject)
			}
		})
	}
}

func TestKeyFuncError(t *testing.T) {
	lim := newLimiter(t, redistest.NewClient(t, redistest.Mini(t).Addr()), redislimit.FixedWindow(1, time.Minute))
	fail := func(context.Context, string) (string, error) { return "", errors.New("no tenant") }
	hc, c := serve(t, newInterceptors(t, lim, grpclimit.WithKeyFunc(fail)))
	if err := check(context.Background(), hc); status.Code(err) != codes.Internal {
		t.Fatalf("call: %v, want Internal", err)
	}
	if n := c.handled.Load(); n != 0 {
		t.Errorf("handler called %d times, want 0", n)
	}
}

// TestPeerKeys calls the unary interceptor directly with peers that
// loopback cannot give: IPv6, IPv4-mapped, forwarded chains.
func TestPeerKeys(t *testing.T) {
	trusted := grpclimit.WithTrustedProxies(netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48"))
	tests := []struct {
		name    string
		peer    string
		xff     []string
		opts    []grpclimit.Option
		wantKey string
	}{
		{"IPv4", "192.0.2.1:5000", nil, nil, "192.0.2.1"},
		{"IPv6 as its /64", "[2001:db8:1:2:3:4:5:6]:5000", nil, nil, "2001:db8:1:2::/64"},
		{"IPv4-mapped", "[::ffff:192.0.2.9]:5000", nil, nil, "192.0.2.9"},
		{"untrusted peer ignores the header", "192.0.2.1:1", []string{"203.0.113.7"}, []grpclimit.Option{trusted}, "192.0.2.1"},
		{"trusted hops skipped from the right", "10.0.0.1:1", []string{"203.0.113.7, 198.51.100.2, 10.1.1.1"}, []grpclimit.Option{trusted}, "198.51.100.2"},
		{"several values", "10.0.0.1:1", []string{"203.0.113.7", "198.51.100.3:8080", "10.2.2.2"}, []grpclimit.Option{trusted}, "198.51.100.3"},
		{"IPv6 hop in brackets", "[2001:db8:ffff::1]:1", []string{"[2001:db8:7:7::9]:443"}, []grpclimit.Option{trusted}, "2001:db8:7:7::/64"},
		{"garbage ends the walk at the last trusted hop", "10.0.0.1:1", []string{"203.0.113.7, unknown, 10.3.3.3"}, []grpclimit.Option{trusted}, "10.3.3.3"},
		{"all trusted gives the leftmost", "10.0.0.1:1", []string{"10.4.4.4, 10.5.5.5"}, []grpclimit.Option{trusted}, "10.4.4.4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := newLimiter(t, redistest.NewClient(t, redistest.Mini(t).Addr()), redislimit.FixedWindow(5, time.Minute))
			ic := newInterceptors(t, lim, tt.opts...)
			ap := netip.MustParseAddrPort(tt.peer)
			ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: net.TCPAddrFromAddrPort(ap)})
			if tt.xff != nil {
				md := metadata.MD{}
				md.Append(grpclimit.ForwardedForKey, tt.xff...)
				ctx = metadata.NewIncomingContext(ctx, md)
			}
			called := false
			_, err := ic.UnaryServer()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: checkMethod}, func(context.Context, any) (any, error) {
				called = true
				return nil, nil
			})
			if err != nil || !called {
				t.Fatalf("interceptor: %v, handler called %v", err, called)
			}
			if r, err := lim.Peek(context.Background(), tt.wantKey); err != nil || r.Remaining != 4 {
				t.Errorf("Peek(%q) = %+v, %v: want one call charged to it", tt.wantKey, r, err)
			}
		})
	}
	t.Run("no peer", func(t *testing.T) {
		lim := newLimiter(t, redistest.NewClient(t, redistest.Mini(t).Addr()), redislimit.FixedWindow(5, time.Minute))
		_, err := newInterceptors(t, lim).UnaryServer()(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: checkMethod},
			func(context.Context, any) (any, error) { t.Error("handler called"); return nil, nil })
		if status.Code(err) != codes.Internal {
			t.Errorf("no peer: %v, want Internal", err)
		}
	})
}

func TestCost(t *testing.T) {
	lim := newLimiter(t, redistest.NewClient(t, redistest.Mini(t).Addr()), redislimit.FixedWindow(10, time.Minute))
	cost := func(m string) int {
		if m == checkMethod {
			return 4
		}
		return 1
	}
	hc, _ := serve(t, newInterceptors(t, lim, grpclimit.WithCost(cost)))
	for range 2 {
		if err := check(context.Background(), hc); err != nil {
			t.Fatal(err)
		}
	}
	if err := check(context.Background(), hc); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("third call of cost 4 under a limit of 10: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	lim := newLimiter(t, redistest.NewClient(t, redistest.Mini(t).Addr()), redislimit.FixedWindow(1, time.Minute))
	key := func(context.Context, string) (string, error) { return "k", nil }
	if _, err := grpclimit.New(nil); !errors.Is(err, grpclimit.ErrNilLimiter) {
		t.Errorf("New(nil) = %v, want ErrNilLimiter", err)
	}
	bad := map[string][]grpclimit.Option{
		"nil option":          {nil},
		"code OK":             {grpclimit.WithCode(codes.OK)},
		"unknown code":        {grpclimit.WithCode(codes.Code(99))},
		"invalid prefix":      {grpclimit.WithTrustedProxies(netip.Prefix{})},
		"nil key func":        {grpclimit.WithKeyFunc(nil)},
		"nil cost":            {grpclimit.WithCost(nil)},
		"proxies and keyfunc": {grpclimit.WithTrustedProxies(netip.MustParsePrefix("10.0.0.0/8")), grpclimit.WithKeyFunc(key)},
	}
	for name, opts := range bad {
		if ic, err := grpclimit.New(lim, opts...); !errors.Is(err, grpclimit.ErrInvalidOption) || ic != nil {
			t.Errorf("%s: New = %v, %v, want ErrInvalidOption", name, ic, err)
		}
	}
}

func TestZeroInterceptors(t *testing.T) {
	var ic grpclimit.Interceptors
	_, err := ic.UnaryServer()(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: checkMethod},
		func(context.Context, any) (any, error) { t.Error("handler called"); return nil, nil })
	if status.Code(err) != codes.Internal {
		t.Errorf("zero Interceptors: %v, want Internal", err)
	}
}

// TestAllDescription: a limiter on All describes the parts that denied.
func TestAllDescription(t *testing.T) {
	lim := newLimiter(t, redistest.NewClient(t, redistest.Mini(t).Addr()),
		redislimit.All(redislimit.FixedWindow(5, time.Second), redislimit.FixedWindow(1, time.Hour)))
	hc, _ := serve(t, newInterceptors(t, lim))
	if err := check(context.Background(), hc); err != nil {
		t.Fatal(err)
	}
	_, qf := denialDetails(t, check(context.Background(), hc))
	if d := qf.Violations[0].Description; d != "limit of 1 per 1h0m0s" {
		t.Errorf("description %q, want the hourly part only", d)
	}
}
