package httplimit_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/httplimit"
)

func ExampleNew() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	// 20 at once refilling at 10 a second, and 1,000 an hour, on a fixed
	// clock for the example.
	now := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	lim, err := redislimit.New(rdb, redislimit.All(
		redislimit.TokenBucket(10, time.Second, 20),
		redislimit.FixedWindow(1000, time.Hour),
	), redislimit.WithClock(func() time.Time { return now }))
	if err != nil {
		panic(err)
	}
	mw, err := httplimit.New(lim,
		httplimit.WithTrustedProxies(netip.MustParsePrefix("10.0.0.0/8")),
		httplimit.WithExempt(func(r *http.Request) bool { return r.URL.Path == "/healthz" }),
	)
	if err != nil {
		panic(err)
	}
	h := mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello\n")
	}))

	get := func() *http.Response {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = "10.1.2.3:40000"                // the load balancer
		r.Header.Set("X-Forwarded-For", "203.0.113.7") // the client
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Result()
	}
	resp := get()
	fmt.Println(resp.Status)
	fmt.Println("RateLimit-Policy:", resp.Header.Get("RateLimit-Policy"))
	fmt.Println("RateLimit:", resp.Header.Get("RateLimit"))
	for i := 0; i < 19; i++ {
		get()
	}
	resp = get()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status)
	fmt.Println("RateLimit:", resp.Header.Get("RateLimit"))
	fmt.Println("Retry-After:", resp.Header.Get("Retry-After"))
	fmt.Println(string(body))
	// Output:
	// 200 OK
	// RateLimit-Policy: "default-0";q=20;w=2, "default-1";q=1000;w=3600
	// RateLimit: "default-0";r=19;t=1, "default-1";r=999;t=3600
	// 429 Too Many Requests
	// RateLimit: "default-0";r=0;t=1, "default-1";r=980;t=1
	// Retry-After: 1
	// {"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","title":"Request cannot be satisfied as assigned quota has been exceeded","status":429,"detail":"Retry in 1 s.","violated-policies":["default-0"]}
}

// Two plans on one key per API key: a tenant's usage carries over when its
// plan changes, and the RateLimit fields describe its plan.
func ExampleWithLimiterFunc() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	now := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	free, err := redislimit.New(rdb, redislimit.FixedWindow(3, time.Minute),
		redislimit.WithClock(func() time.Time { return now }))
	if err != nil {
		panic(err)
	}
	plans := map[string]string{"key-a": "free", "key-b": "pro"} // from a database, say
	mw, err := httplimit.New(free,
		httplimit.WithKeyFunc(func(r *http.Request) (string, error) { return r.Header.Get("X-API-Key"), nil }),
		httplimit.WithLimiterFunc(func(r *http.Request) (*redislimit.Limiter, error) {
			if plans[r.Header.Get("X-API-Key")] == "pro" {
				return free.Using(redislimit.FixedWindow(100, time.Minute))
			}
			return free, nil
		}),
	)
	if err != nil {
		panic(err)
	}
	h := mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	get := func(apiKey string) *http.Response {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("X-API-Key", apiKey)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Result()
	}
	for range 3 {
		get("key-a")
	}
	resp := get("key-a")
	fmt.Println("free:", resp.Status, resp.Header.Get("RateLimit"))
	plans["key-a"] = "pro" // key-a upgrades
	resp = get("key-a")
	fmt.Println("pro:", resp.Status, resp.Header.Get("RateLimit-Policy"), resp.Header.Get("RateLimit"))
	// Output:
	// free: 429 Too Many Requests "default";r=0;t=60
	// pro: 200 OK "default";q=100;w=60 "default";r=96;t=60
}

// At most one report per client in flight: a second request while the
// first runs gets 429.
func ExampleNewConcurrency() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	cc, err := redislimit.NewConcurrency(rdb, 1, time.Minute)
	if err != nil {
		panic(err)
	}
	mw, err := httplimit.NewConcurrency(cc)
	if err != nil {
		panic(err)
	}
	var h http.Handler
	h = mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// While this request runs, another from the same client is refused.
		inner := httptest.NewRecorder()
		h.ServeHTTP(inner, httptest.NewRequest(http.MethodGet, "/report", nil))
		fmt.Println("meanwhile:", inner.Result().Status, "Retry-After", inner.Result().Header.Get("Retry-After"))
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/report", nil))
	fmt.Println("first:", w.Result().Status)
	// Output:
	// meanwhile: 429 Too Many Requests Retry-After 60
	// first: 200 OK
}
