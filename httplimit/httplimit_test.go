package httplimit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/httplimit"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// sfItem is one item of a Structured Fields list whose bare items are
// strings with integer parameters, as the RateLimit fields are.
type sfItem struct {
	Name   string
	Params map[string]int64
}

// parseSFList parses a Structured Fields list (RFC 9651) of strings with
// integer parameters, strictly: anything else is an error.
func parseSFList(s string) ([]sfItem, error) {
	var items []sfItem
	i := 0
	for {
		if i >= len(s) || s[i] != '"' {
			return nil, fmt.Errorf("item at %d: want a string", i)
		}
		i++
		var name strings.Builder
		for {
			if i >= len(s) {
				return nil, errors.New("unterminated string")
			}
			c := s[i]
			i++
			if c == '"' {
				break
			}
			if c == '\\' {
				if i >= len(s) || s[i] != '"' && s[i] != '\\' {
					return nil, errors.New("bad escape")
				}
				c = s[i]
				i++
			} else if c < 0x20 || c > 0x7e {
				return nil, fmt.Errorf("byte %#x in a string", c)
			}
			name.WriteByte(c)
		}
		it := sfItem{Name: name.String(), Params: map[string]int64{}}
		for i < len(s) && s[i] == ';' {
			i++
			for i < len(s) && s[i] == ' ' {
				i++
			}
			start := i
			if i >= len(s) || s[i] < 'a' || s[i] > 'z' {
				return nil, fmt.Errorf("parameter key at %d", i)
			}
			for i < len(s) && (s[i] >= 'a' && s[i] <= 'z' || s[i] >= '0' && s[i] <= '9' || strings.IndexByte("_-.*", s[i]) >= 0) {
				i++
			}
			key := s[start:i]
			if i >= len(s) || s[i] != '=' {
				return nil, fmt.Errorf("parameter %q without an integer", key)
			}
			i++
			start = i
			if i < len(s) && s[i] == '-' {
				i++
			}
			for i < len(s) && s[i] >= '0' && s[i] <= '9' {
				i++
			}
			digits := strings.TrimPrefix(s[start:i], "-")
			if len(digits) == 0 || len(digits) > 15 {
				return nil, fmt.Errorf("parameter %q: %q is not an sf-integer", key, s[start:i])
			}
			v, _ := strconv.ParseInt(s[start:i], 10, 64)
			if _, dup := it.Params[key]; dup {
				return nil, fmt.Errorf("parameter %q twice", key)
			}
			it.Params[key] = v
		}
		items = append(items, it)
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i == len(s) {
			return items, nil
		}
		if s[i] != ',' {
			return nil, fmt.Errorf("byte %q after an item", s[i])
		}
		i++
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i == len(s) {
			return nil, errors.New("trailing comma")
		}
	}
}

func TestParseSFList(t *testing.T) {
	good := `"a";q=1;w=60, "b\"c";r=0;t=-2`
	got, err := parseSFList(good)
	want := []sfItem{{"a", map[string]int64{"q": 1, "w": 60}}, {`b"c`, map[string]int64{"r": 0, "t": -2}}}
	if err != nil || !cmp.Equal(want, got) {
		t.Errorf("parseSFList(%q) = %v, %v", good, got, err)
	}
	for _, bad := range []string{``, `a;q=1`, `"a";Q=1`, `"a";q`, `"a";q=1.5`, `"a",`, `"a";q=1;q=2`, `"a" "b"`, `"a\b"`, `"a";q=1234567890123456`} {
		if _, err := parseSFList(bad); err == nil {
			t.Errorf("parseSFList(%q) accepted it", bad)
		}
	}
}

// fixture is a limited server over real TCP.
type fixture struct {
	srv    *httptest.Server
	served atomic.Int64
}

func newFixture(t *testing.T, lim *redislimit.Limiter, opts ...httplimit.Option) *fixture {
	t.Helper()
	mw, err := httplimit.New(lim, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f := &fixture{}
	f.srv = httptest.NewServer(mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.served.Add(1)
		_, _ = io.WriteString(w, "ok")
	})))
	t.Cleanup(f.srv.Close)
	return f
}

// get sends a request with the given headers ("Name: value").
func (f *fixture) get(t *testing.T, path string, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Add(k, v)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp
}

func newLimiter(t *testing.T, b redistest.Backend, alg redislimit.Algorithm, clk *clock.Fake, opts ...redislimit.Option) *redislimit.Limiter {
	t.Helper()
	opts = append([]redislimit.Option{redislimit.WithPrefix(strings.ReplaceAll(t.Name(), "/", "_") + ":"), redislimit.WithTimeout(time.Minute)}, opts...)
	if clk != nil {
		opts = append(opts, redislimit.WithClock(clk.Now))
	}
	lim, err := redislimit.New(b.Client(t), alg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return lim
}

func header(t *testing.T, resp *http.Response, name string) []sfItem {
	t.Helper()
	v := resp.Header.Values(name)
	if len(v) != 1 {
		t.Fatalf("%d %s fields, want 1", len(v), name)
	}
	items, err := parseSFList(v[0])
	if err != nil {
		t.Fatalf("%s: %q: %v", name, v[0], err)
	}
	return items
}

func TestHeadersAndDenial(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		clk := clock.NewFake(epoch)
		f := newFixture(t, newLimiter(t, b, redislimit.FixedWindow(3, time.Minute), clk))
		for i := 0; i < 3; i++ {
			resp := f.get(t, "/")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d: %s", i, resp.Status)
			}
			if diff := cmp.Diff([]sfItem{{"default", map[string]int64{"q": 3, "w": 60}}}, header(t, resp, "RateLimit-Policy")); diff != "" {
				t.Errorf("RateLimit-Policy (-want +got):\n%s", diff)
			}
			// The window closes 60s after the first request; t rounds up.
			wantT := []int64{60, 60, 59}[i]
			if diff := cmp.Diff([]sfItem{{"default", map[string]int64{"r": int64(2 - i), "t": wantT}}}, header(t, resp, "RateLimit")); diff != "" {
				t.Errorf("request %d: RateLimit (-want +got):\n%s", i, diff)
			}
			if v := resp.Header.Get("Retry-After"); v != "" {
				t.Errorf("request %d: Retry-After %q on an admitted request", i, v)
			}
			clk.Advance(500 * time.Millisecond)
		}
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/", nil)
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Type     string
			Title    string
			Status   int
			Violated []string `json:"violated-policies"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("problem body: %v", err)
		}
		// 1.5s of the window gone: 58.5s left, 59 rounded up.
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "59" ||
			resp.Header.Get("Content-Type") != "application/problem+json" || body.Type != httplimit.QuotaExceededType || body.Status != 429 ||
			!cmp.Equal(body.Violated, []string{"default"}) {
			t.Errorf("4th request: %s, Retry-After %q, %s %+v; want 429, 59, a quota-exceeded problem", resp.Status, resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type"), body)
		}
		if diff := cmp.Diff([]sfItem{{"default", map[string]int64{"r": 0, "t": 59}}}, header(t, resp, "RateLimit")); diff != "" {
			t.Errorf("denied: RateLimit (-want +got):\n%s", diff)
		}
		if n := f.served.Load(); n != 3 {
			t.Errorf("next handler served %d requests, want 3", n)
		}
	})
}

// A limiter in shadow mode serves every request; the RateLimit fields of
// one it would deny tell the truth (r=0, t the seconds until it could be
// admitted), with no Retry-After.
func TestShadowMode(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		clk := clock.NewFake(epoch)
		f := newFixture(t, newLimiter(t, b, redislimit.All(redislimit.FixedWindow(2, time.Minute), redislimit.FixedWindow(5, time.Hour)), clk, redislimit.WithShadowMode()))
		for i := 0; i < 4; i++ {
			resp := f.get(t, "/")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d: %s, want it served in shadow mode", i, resp.Status)
			}
			if v := resp.Header.Get("Retry-After"); v != "" {
				t.Errorf("request %d: Retry-After %q on a served request", i, v)
			}
			want := []sfItem{
				{"default-0", map[string]int64{"r": int64(max(1-i, 0)), "t": 60}},
				{"default-1", map[string]int64{"r": int64(max(4-i, 3)), "t": 3600}}, // a shadowed request consumes nothing
			}
			if i >= 2 {
				// The minute's limit would deny: t is its retry, and the
				// hour's is capped by it.
				want[0].Params["t"], want[1].Params["t"] = 60, 60
			}
			if diff := cmp.Diff(want, header(t, resp, "RateLimit")); diff != "" {
				t.Errorf("request %d: RateLimit (-want +got):\n%s", i, diff)
			}
		}
		if n := f.served.Load(); n != 4 {
			t.Errorf("next handler served %d requests, want 4", n)
		}
	})
}

// A limiter on All lists one item per part; a token bucket's w is its
// time to fill.
func TestAllHeaders(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		clk := clock.NewFake(epoch)
		lim := newLimiter(t, b, redislimit.All(redislimit.TokenBucket(1, 2*time.Second, 2), redislimit.FixedWindow(5, time.Minute)), clk)
		f := newFixture(t, lim, httplimit.WithPolicyName(`api "v1"`), httplimit.WithLegacyHeaders())
		resp := f.get(t, "/")
		wantPolicy := []sfItem{{`api "v1"-0`, map[string]int64{"q": 2, "w": 4}}, {`api "v1"-1`, map[string]int64{"q": 5, "w": 60}}}
		if diff := cmp.Diff(wantPolicy, header(t, resp, "RateLimit-Policy")); diff != "" {
			t.Errorf("RateLimit-Policy (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]sfItem{{`api "v1"-0`, map[string]int64{"r": 1, "t": 2}}, {`api "v1"-1`, map[string]int64{"r": 4, "t": 60}}}, header(t, resp, "RateLimit")); diff != "" {
			t.Errorf("RateLimit (-want +got):\n%s", diff)
		}
		if got := resp.Header.Get("X-RateLimit-Limit") + " " + resp.Header.Get("X-RateLimit-Remaining") + " " + resp.Header.Get("X-RateLimit-Reset"); got != "2 1 2" {
			// The bucket binds: 1 of 2 left, full in 2s.
			t.Errorf("legacy fields %q, want \"2 1 2\"", got)
		}
		f.get(t, "/")
		resp = f.get(t, "/") // the bucket is empty: 2s to a token
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" {
			t.Fatalf("3rd request: %s, Retry-After %q; want 429, 2", resp.Status, resp.Header.Get("Retry-After"))
		}
		for _, it := range header(t, resp, "RateLimit") {
			if it.Params["t"] > 2 {
				t.Errorf("item %q: t=%d past Retry-After 2", it.Name, it.Params["t"])
			}
		}
	})
}

func TestClientKeys(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		loopback := netip.MustParsePrefix("127.0.0.0/8")
		tests := []struct {
			name    string
			trusted []netip.Prefix
			first   []string
			second  []string
			same    bool // the two requests share a key
		}{
			{"SpoofedHeaderIgnored", nil, []string{"X-Forwarded-For: 203.0.113.1"}, []string{"X-Forwarded-For: 203.0.113.2"}, true},
			{"TrustedProxy", []netip.Prefix{loopback}, []string{"X-Forwarded-For: 203.0.113.1"}, []string{"X-Forwarded-For: 203.0.113.2"}, false},
			{"PrependedFakesIgnored", []netip.Prefix{loopback}, []string{"X-Forwarded-For: 1.1.1.1, 203.0.113.9"}, []string{"X-Forwarded-For: 2.2.2.2, 203.0.113.9"}, true},
			{"IPv6GroupedBy64", []netip.Prefix{loopback}, []string{"X-Forwarded-For: 2001:db8::1"}, []string{"X-Forwarded-For: 2001:db8::ffff:2"}, true},
			{"IPv6OtherSubnet", []netip.Prefix{loopback}, []string{"X-Forwarded-For: 2001:db8::1"}, []string{"X-Forwarded-For: 2001:db8:0:1::1"}, false},
			{"Forwarded", []netip.Prefix{loopback}, []string{`Forwarded: for="[2001:db8::1]:4711"`}, []string{`Forwarded: For=198.51.100.7;proto=https`}, false},
			{"ForwardedSameClient", []netip.Prefix{loopback}, []string{`Forwarded: for=198.51.100.7`}, []string{"X-Forwarded-For: 198.51.100.7"}, true},
			// A proxy that appends to X-Forwarded-For and passes the
			// client's own Forwarded through: X-Forwarded-For wins.
			{"ClientForwardedIgnored", []netip.Prefix{loopback}, []string{"Forwarded: for=1.1.1.1", "X-Forwarded-For: 198.51.100.7"}, []string{"Forwarded: for=2.2.2.2", "X-Forwarded-For: 198.51.100.7"}, true},
			// Pinned to X-Forwarded-For: a client's own Forwarded field
			// is ignored even without X-Forwarded-For.
			{"PinnedHeader", []netip.Prefix{loopback}, []string{"Forwarded: for=1.1.1.1"}, []string{"Forwarded: for=2.2.2.2"}, true},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				lim := newLimiter(t, b, redislimit.FixedWindow(1, time.Hour), nil)
				opts := []httplimit.Option{httplimit.WithTrustedProxies(tt.trusted...)}
				if tt.name == "PinnedHeader" {
					opts = append(opts, httplimit.WithForwardedHeader("x-forwarded-for"))
				}
				f := newFixture(t, lim, opts...)
				if resp := f.get(t, "/", tt.first...); resp.StatusCode != http.StatusOK {
					t.Fatalf("first request: %s", resp.Status)
				}
				resp := f.get(t, "/", tt.second...)
				if got := resp.StatusCode == http.StatusTooManyRequests; got != tt.same {
					t.Errorf("second request: %s; want a shared key: %v", resp.Status, tt.same)
				}
			})
		}
	})
}

func TestRedisDown(t *testing.T) {
	addr := func(t *testing.T) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := l.Addr().String()
		l.Close()
		return a
	}(t)
	down := func(policy redislimit.FailurePolicy) *redislimit.Limiter {
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		t.Cleanup(func() { _ = c.Close() })
		lim, err := redislimit.New(c, redislimit.FixedWindow(5, time.Minute), redislimit.WithFailurePolicy(policy), redislimit.WithTimeout(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return lim
	}
	f := newFixture(t, down(redislimit.FailError))
	resp := f.get(t, "/")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("Redis down, FailError: %s %s; want 503 with a problem body", resp.Status, resp.Header.Get("Content-Type"))
	}
	// ErrorRetryAfter is a whole number of seconds, so the field states it
	// exactly.
	if got, want := resp.Header.Get("Retry-After"), strconv.Itoa(int(httplimit.ErrorRetryAfter/time.Second)); got != want || want == "0" {
		t.Errorf("Redis down, FailError: Retry-After %q, want %q", got, want)
	}
	if n := f.served.Load(); n != 0 {
		t.Errorf("next handler called %d times with Redis down", n)
	}
	var handled atomic.Int64
	g := newFixture(t, down(redislimit.FailError), httplimit.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, err error) {
		handled.Add(1)
		w.WriteHeader(http.StatusTeapot)
	}))
	if resp := g.get(t, "/"); resp.StatusCode != http.StatusTeapot || handled.Load() != 1 || resp.Header.Get("Retry-After") != "" {
		t.Errorf("error handler: %s, called %d times, Retry-After %q; want its own response alone", resp.Status, handled.Load(), resp.Header.Get("Retry-After"))
	}
	open := newFixture(t, down(redislimit.FailOpen))
	resp = open.get(t, "/")
	if resp.StatusCode != http.StatusOK || open.served.Load() != 1 {
		t.Errorf("Redis down, FailOpen: %s; want served", resp.Status)
	}
	header(t, resp, "RateLimit")
}

func TestExemptCostAndLimitedHandler(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		clk := clock.NewFake(epoch)
		lim := newLimiter(t, b, redislimit.FixedWindow(3, time.Minute), clk)
		var limited atomic.Int64
		f := newFixture(t, lim,
			httplimit.WithExempt(func(r *http.Request) bool { return r.URL.Path == "/healthz" }),
			httplimit.WithCost(func(r *http.Request) int {
				if r.URL.Path == "/expensive" {
					return 2
				}
				return 1
			}),
			httplimit.WithLimitedHandler(func(w http.ResponseWriter, r *http.Request, res redislimit.Result) {
				limited.Add(1)
				w.WriteHeader(http.StatusServiceUnavailable)
			}),
			httplimit.WithKeyFunc(func(r *http.Request) (string, error) {
				if k := r.Header.Get("X-Api-Key"); k != "" {
					return k, nil
				}
				return "", errors.New("no API key")
			}))
		for i := 0; i < 10; i++ {
			resp := f.get(t, "/healthz")
			if resp.StatusCode != http.StatusOK || resp.Header.Get("RateLimit") != "" {
				t.Fatalf("exempt request: %s, RateLimit %q", resp.Status, resp.Header.Get("RateLimit"))
			}
		}
		resp := f.get(t, "/expensive", "X-Api-Key: k1")
		if it := header(t, resp, "RateLimit"); resp.StatusCode != http.StatusOK || it[0].Params["r"] != 1 {
			t.Errorf("cost 2: %s, %v; want served with 1 left", resp.Status, it)
		}
		resp = f.get(t, "/expensive", "X-Api-Key: k1")
		if resp.StatusCode != http.StatusServiceUnavailable || limited.Load() != 1 || resp.Header.Get("Retry-After") == "" {
			t.Errorf("cost 2 with 1 left: %s, limited handler called %d times, Retry-After %q", resp.Status, limited.Load(), resp.Header.Get("Retry-After"))
		}
		if resp := f.get(t, "/", "X-Api-Key: k2"); resp.StatusCode != http.StatusOK {
			t.Errorf("another API key: %s", resp.Status)
		}
		if resp := f.get(t, "/"); resp.StatusCode != http.StatusServiceUnavailable || limited.Load() != 1 {
			t.Errorf("no API key: %s; want the error response", resp.Status)
		}
		if n := f.served.Load(); n != 12 {
			t.Errorf("next handler served %d requests, want 12", n)
		}
	})
}

func TestNewValidates(t *testing.T) {
	lim, err := redislimit.NewLocal(redislimit.FixedWindow(1, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := httplimit.New(nil); !errors.Is(err, httplimit.ErrNilLimiter) {
		t.Errorf("New(nil) = %v, want ErrNilLimiter", err)
	}
	for _, o := range []httplimit.Option{
		httplimit.WithIPv6Prefix(0), httplimit.WithIPv6Prefix(129),
		httplimit.WithPolicyName(""), httplimit.WithPolicyName("tab\there"), httplimit.WithPolicyName(strings.Repeat("x", 65)),
		httplimit.WithTrustedProxies(netip.Prefix{}),
		httplimit.WithForwardedHeader("X-Real-IP"),
	} {
		_, err := httplimit.New(lim, o)
		if !errors.Is(err, httplimit.ErrInvalidOption) {
			t.Errorf("New with a bad option = %v, want ErrInvalidOption", err)
		}
		// The module has one configuration sentinel.
		if !errors.Is(err, redislimit.ErrInvalidConfig) {
			t.Errorf("New with a bad option = %v, want it to match redislimit.ErrInvalidConfig too", err)
		}
	}
}

var _ = context.Background

// A limit past the 15 digits of a Structured Fields integer is capped.
func TestHugeLimitStaysAnSFInteger(t *testing.T) {
	lim, err := redislimit.NewLocal(redislimit.FixedWindow(1<<50, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, lim)
	resp := f.get(t, "/")
	if p := header(t, resp, "RateLimit-Policy"); p[0].Params["q"] != 999_999_999_999_999 {
		t.Errorf("q = %d, want the largest sf-integer", p[0].Params["q"])
	}
	header(t, resp, "RateLimit")
}

// WithLimiterFunc decides each request with the limiter it chooses, on
// real Redis: the RateLimit fields describe that limiter, a tenant's
// usage carries over when its plan changes, a nil choice falls back to
// New's limiter, and an error is a 503 without reaching the handler.
func TestLimiterFunc(t *testing.T) {
	s := redistest.Start(t)
	rdb := redistest.NewClient(t, s.Addr())
	clk := clock.NewFake(epoch)
	free, err := redislimit.New(rdb, redislimit.FixedWindow(2, time.Minute),
		redislimit.WithPrefix(t.Name()+":"), redislimit.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	pro, err := free.Using(redislimit.FixedWindow(5, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	plan := map[string]*redislimit.Limiter{"free": nil, "pro": pro}
	errPlan := errors.New("plan store down")
	var served atomic.Int32
	newHandler := func(lim *redislimit.Limiter) http.Handler {
		mw, err := httplimit.New(lim,
			httplimit.WithKeyFunc(func(r *http.Request) (string, error) { return "tenant", nil }),
			httplimit.WithLimiterFunc(func(r *http.Request) (*redislimit.Limiter, error) {
				name := r.Header.Get("Plan")
				if name == "broken" {
					return nil, errPlan
				}
				return plan[name], nil
			}))
		if err != nil {
			t.Fatal(err)
		}
		return mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) }))
	}
	h := newHandler(free)
	get := func(h http.Handler, name string) *http.Response {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Plan", name)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Result()
	}
	tests := []struct {
		plan, status, policy, ratelimit string
	}{
		{"free", "200 OK", `"default";q=2;w=60`, `"default";r=1;t=60`},
		{"free", "200 OK", `"default";q=2;w=60`, `"default";r=0;t=60`},
		{"free", "429 Too Many Requests", `"default";q=2;w=60`, `"default";r=0;t=60`},
		// The upgrade keeps the 2 units used.
		{"pro", "200 OK", `"default";q=5;w=60`, `"default";r=2;t=60`},
		{"free", "429 Too Many Requests", `"default";q=2;w=60`, `"default";r=0;t=60`},
		{"broken", "503 Service Unavailable", "", ""},
	}
	for i, tt := range tests {
		before := served.Load()
		resp := get(h, tt.plan)
		if resp.Status != tt.status || resp.Header.Get("RateLimit-Policy") != tt.policy || resp.Header.Get("RateLimit") != tt.ratelimit {
			t.Errorf("request %d (%s) = %s, RateLimit-Policy %q, RateLimit %q; want %s, %q, %q", i, tt.plan,
				resp.Status, resp.Header.Get("RateLimit-Policy"), resp.Header.Get("RateLimit"), tt.status, tt.policy, tt.ratelimit)
		}
		if reached := served.Load() > before; reached != (tt.status == "200 OK") {
			t.Errorf("request %d (%s) reached the handler: %v", i, tt.plan, reached)
		}
	}

	// Without a limiter of its own, a request with no choice fails.
	if _, err := httplimit.New(nil, httplimit.WithLimiterFunc(func(*http.Request) (*redislimit.Limiter, error) { return nil, nil })); err != nil {
		t.Fatalf("New(nil, WithLimiterFunc) = %v, want no error", err)
	}
	h = newHandler(nil)
	if resp := get(h, "free"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("no limiter chosen, none of its own: %s, want 503", resp.Status)
	}
	if resp := get(h, "pro"); resp.StatusCode != http.StatusOK {
		t.Errorf("pro on a Middleware without a limiter of its own: %s, want 200", resp.Status)
	}
}
