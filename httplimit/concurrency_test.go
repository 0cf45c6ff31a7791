package httplimit_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/httplimit"
	"github.com/redislimit/redislimit/internal/redistest"
)

// newConcurrency returns a concurrency limit on c with the running test's
// prefix.
func newConcurrency(t *testing.T, c redis.Scripter, limit int, ttl time.Duration, opts ...redislimit.Option) *redislimit.Concurrency {
	t.Helper()
	opts = append([]redislimit.Option{redislimit.WithPrefix(strings.ReplaceAll(t.Name(), "/", "_") + ":"), redislimit.WithTimeout(time.Minute)}, opts...)
	cc, err := redislimit.NewConcurrency(c, limit, ttl, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// blocking is a handler that, for a request to "/", signals entered and
// returns when release is closed; it answers others at once.
type blocking struct {
	entered chan struct{}
	release chan struct{}
}

func newBlocking() *blocking {
	return &blocking{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (b *blocking) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/" {
		b.entered <- struct{}{}
		<-b.release
	}
	w.WriteHeader(http.StatusOK)
}

// serve sends a request from the client 192.0.2.1 to h and returns the
// response.
func serve(h http.Handler, path string) *http.Response {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.RemoteAddr = "192.0.2.1:1234"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

// inFlight starts a request to h in the background, waits until the next
// handler of b has it, and returns the channel of its response.
func inFlight(t *testing.T, h http.Handler, b *blocking) <-chan *http.Response {
	t.Helper()
	done := make(chan *http.Response, 1)
	go func() { done <- serve(h, "/") }()
	select {
	case <-b.entered:
	case resp := <-done:
		t.Fatalf("the request in flight was answered %s before it reached the handler", resp.Status)
	}
	return done
}

func TestConcurrencyMiddleware(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, rb redistest.Backend) {
		c := rb.Client(t)
		cc := newConcurrency(t, c, 1, time.Minute)
		b := newBlocking()
		mw, err := httplimit.NewConcurrency(cc, httplimit.WithExempt(func(r *http.Request) bool { return r.URL.Path == "/healthz" }))
		if err != nil {
			t.Fatal(err)
		}
		h := mw.Handler(b)
		first := inFlight(t, h, b)

		resp := serve(h, "/")
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "60" {
			t.Errorf("second request in flight: %s, Retry-After %q; want 429 and 60", resp.Status, resp.Header.Get("Retry-After"))
		}
		var body struct {
			Type     string   `json:"type"`
			Status   int      `json:"status"`
			Violated []string `json:"violated-policies"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("429 body: %v, Content-Type %q", err, resp.Header.Get("Content-Type"))
		}
		if body.Type != httplimit.QuotaExceededType || body.Status != 429 || !cmp.Equal(body.Violated, []string{"default"}) {
			t.Errorf("429 body = %+v", body)
		}
		if resp.Header.Get("RateLimit") != "" {
			t.Errorf("a concurrency limit sent RateLimit %q", resp.Header.Get("RateLimit"))
		}

		// An exempt request passes while the key is full.
		if resp := serve(h, "/healthz"); resp.StatusCode != http.StatusOK {
			t.Errorf("exempt request while full: %s", resp.Status)
		}

		close(b.release)
		if resp := <-first; resp.StatusCode != http.StatusOK {
			t.Fatalf("first request: %s", resp.Status)
		}
		// Its slot is free again.
		if resp := inFlightDone(t, h, b); resp.StatusCode != http.StatusOK {
			t.Errorf("request after the first ended: %s", resp.Status)
		}
		if n := redistest.KeyCount(t, c); n != 0 {
			t.Errorf("%d keys left after every request ended", n)
		}
	})
}

// inFlightDone serves one request to h, whose handler b no longer blocks.
func inFlightDone(t *testing.T, h http.Handler, b *blocking) *http.Response {
	t.Helper()
	resp := serve(h, "/")
	<-b.entered
	return resp
}

// A handler that panics releases its lease, and the panic goes on.
func TestConcurrencyMiddlewarePanic(t *testing.T) {
	c := redistest.Start(t).Client()
	cc := newConcurrency(t, c, 1, time.Minute)
	mw, err := httplimit.NewConcurrency(cc)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	calls := 0
	h := mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if calls == 1 {
			panic(boom)
		}
	}))
	func() {
		defer func() {
			if v := recover(); v != boom {
				t.Errorf("recovered %v, want the handler's panic", v)
			}
		}()
		serve(h, "/")
		t.Error("the handler's panic did not reach the caller")
	}()
	if n := redistest.KeyCount(t, c); n != 0 {
		t.Errorf("%d keys held after the handler panicked", n)
	}
	if resp := serve(h, "/"); resp.StatusCode != http.StatusOK || calls != 2 {
		t.Errorf("request after a panic: %s, handler called %d times", resp.Status, calls)
	}
}

// A handler that runs past the lease's TTL keeps its slot: the middleware
// extends the lease while it runs. Real time must pass here, as the
// extensions run on a real ticker.
func TestConcurrencyMiddlewareExtendsSlowHandler(t *testing.T) {
	c := redistest.Start(t).Client()
	const ttl = 600 * time.Millisecond
	cc := newConcurrency(t, c, 1, ttl)
	mw, err := httplimit.NewConcurrency(cc)
	if err != nil {
		t.Fatal(err)
	}
	b := newBlocking()
	h := mw.Handler(b)
	first := inFlight(t, h, b)
	time.Sleep(3 * ttl)
	if resp := serve(h, "/other"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("request while a handler has run for 3×TTL: %s, want 429 (its lease extended)", resp.Status)
	}
	close(b.release)
	if resp := <-first; resp.StatusCode != http.StatusOK {
		t.Fatalf("slow request: %s", resp.Status)
	}
	if resp := inFlightDone(t, h, b); resp.StatusCode != http.StatusOK {
		t.Errorf("request after the slow one ended: %s", resp.Status)
	}
}

// A request whose client went away still releases its slot.
func TestConcurrencyMiddlewareReleasesAfterCancel(t *testing.T) {
	c := redistest.Start(t).Client()
	cc := newConcurrency(t, c, 1, time.Minute)
	mw, err := httplimit.NewConcurrency(cc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { cancel() }))
	r := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
	h.ServeHTTP(httptest.NewRecorder(), r)
	if n := redistest.KeyCount(t, c); n != 0 {
		t.Errorf("%d keys held after a cancelled request ended", n)
	}
}

func TestConcurrencyMiddlewareHandlers(t *testing.T) {
	c := redistest.Mini(t)
	rdb := redis.NewClient(&redis.Options{Addr: c.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	cc := newConcurrency(t, rdb, 1, 1500*time.Millisecond)
	var limited redislimit.Result
	var mu sync.Mutex
	b := newBlocking()
	mw, err := httplimit.NewConcurrency(cc,
		httplimit.WithKeyFunc(func(r *http.Request) (string, error) { return r.URL.Query().Get("k"), nil }),
		httplimit.WithLimitedHandler(func(w http.ResponseWriter, r *http.Request, res redislimit.Result) {
			mu.Lock()
			limited = res
			mu.Unlock()
			w.WriteHeader(http.StatusTeapot)
		}),
		httplimit.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, err error) {
			if !errors.Is(err, redislimit.ErrEmptyKey) {
				t.Errorf("error handler got %v, want ErrEmptyKey", err)
			}
			w.WriteHeader(http.StatusBadRequest)
		}))
	if err != nil {
		t.Fatal(err)
	}
	h := mw.Handler(b)
	done := make(chan *http.Response, 1)
	go func() { done <- serve(h, "/?k=a") }()
	<-b.entered
	resp := serve(h, "/?k=a")
	mu.Lock()
	if resp.StatusCode != http.StatusTeapot || limited.Allowed || limited.Limit != 1 || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("full key: %s, Retry-After %q, limited handler got %+v", resp.Status, resp.Header.Get("Retry-After"), limited)
	}
	mu.Unlock()
	// Another key has its own slots.
	if resp := serve(h, "/other?k=b"); resp.StatusCode != http.StatusOK {
		t.Errorf("another key: %s", resp.Status)
	}
	if resp := serve(h, "/"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("empty key: %s, want the error handler's 400", resp.Status)
	}
	close(b.release)
	<-done
}

func TestConcurrencyMiddlewareRedisDown(t *testing.T) {
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = down.Close() })
	cc := newConcurrency(t, down, 1, time.Minute)
	mw, err := httplimit.NewConcurrency(cc)
	if err != nil {
		t.Fatal(err)
	}
	served := false
	resp := serve(mw.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { served = true })), "/")
	if resp.StatusCode != http.StatusServiceUnavailable || served {
		t.Errorf("Redis down: %s, served %v; want 503, not served", resp.Status, served)
	}
}

func TestNewConcurrencyValidates(t *testing.T) {
	if _, err := httplimit.NewConcurrency(nil); !errors.Is(err, httplimit.ErrNilConcurrency) {
		t.Errorf("nil: %v, want ErrNilConcurrency", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	cc := newConcurrency(t, rdb, 1, time.Minute)
	for name, o := range map[string]httplimit.Option{
		"WithCost":          httplimit.WithCost(func(*http.Request) int { return 2 }),
		"WithLimiterFunc":   httplimit.WithLimiterFunc(func(*http.Request) (*redislimit.Limiter, error) { return nil, nil }),
		"WithLegacyHeaders": httplimit.WithLegacyHeaders(),
		"WithIPv6Prefix":    httplimit.WithIPv6Prefix(0),
		"WithPolicyName":    httplimit.WithPolicyName(""),
	} {
		if _, err := httplimit.NewConcurrency(cc, o); !errors.Is(err, httplimit.ErrInvalidOption) {
			t.Errorf("%s: %v, want ErrInvalidOption", name, err)
		}
	}
}
