package loadtest

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redislimit/redislimit/internal/redistest"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

const (
	// instances is how many copies of the server share one Redis.
	instances = 3
	// rate is the attack's rate in requests per second: 50 a second per
	// client, 25 times the limit's average.
	rate = 400
	// duration is how long each attack lasts. It is well under limitWindow,
	// so each client's requests fall in one window.
	duration = 3 * time.Second
	// limit and limitWindow are the example server's policy for /hello:
	// FixedWindow(20, 10*time.Second) per client IP.
	limit       = 20
	limitWindow = 10 * time.Second
)

// clients are the client addresses sent in X-Forwarded-For, from TEST-NET-2
// (RFC 5737): header values only, never dialled.
var clients = func() []string {
	var ips []string
	for i := 1; i <= 8; i++ {
		ips = append(ips, fmt.Sprintf("198.51.100.%d", i))
	}
	return ips
}()

// TestLoad runs three copies of the example server on one real Redis and
// attacks GET /hello, round-robin over the copies and over eight client
// addresses, far above its limit. Each client must get exactly its limit
// admitted across the three copies, every other request 429, and nothing
// else. The same attack on three copies with RATE_LIMIT=off measures the
// latency the middleware adds, which is reported but not checked: the
// machine is shared and noisy.
func TestLoad(t *testing.T) {
	redisAddr := redistest.Start(t).Addr() // skips, or fails with REDISLIMIT_REQUIRE_REDIS=1, without redis-server
	bin := buildServer(t)
	env := []string{"REDIS_ADDR=" + redisAddr, "TRUSTED_PROXIES=127.0.0.0/8"}
	limited := startServers(t, bin, "limited", instances, slices.Concat(env, []string{"RATE_LIMIT="})...)
	baseline := startServers(t, bin, "baseline", instances, slices.Concat(env, []string{"RATE_LIMIT=off"})...)

	// The limited run goes first: if the second run gains from a warmed-up
	// test process, that shrinks the baseline, not the middleware's cost.
	lim := attack(limited)
	base := attack(baseline)

	rep := report(lim, base)
	t.Log("\n" + rep)
	if name := os.Getenv("LOADTEST_REPORT"); name != "" {
		if err := os.WriteFile(name, []byte(rep), 0o644); err != nil {
			t.Errorf("LOADTEST_REPORT: %v", err)
		}
	}

	checkStatuses(t, "limited", lim, http.StatusOK, http.StatusTooManyRequests)
	checkStatuses(t, "RATE_LIMIT=off", base, http.StatusOK)
	for _, c := range clients {
		s := lim.clients[c]
		switch {
		case s == nil || s.admitted == 0:
			t.Errorf("client %s: no request admitted", c)
			continue
		case s.lastEnd.Sub(s.firstAdmitted) >= limitWindow:
			// A second window may have opened: the counts below would
			// prove nothing.
			t.Fatalf("client %s: requests spread over %v from the first admitted one, not within one %v window; the machine is too slow for this test",
				c, s.lastEnd.Sub(s.firstAdmitted), limitWindow)
		case s.admitted > limit:
			t.Errorf("client %s: %d of %d requests admitted across %d servers, over the limit of %d per %v",
				c, s.admitted, s.sent, instances, limit, limitWindow)
		case s.admitted < limit:
			t.Errorf("client %s: %d of %d requests admitted, want the whole limit of %d: the rate is far above it",
				c, s.admitted, s.sent, limit)
		}
	}
}

// outcome is what one attack got back.
type outcome struct {
	metrics vegeta.Metrics
	codes   map[uint16]int // responses by status code; 0 counts transport errors
	clients map[string]*clientStats
}

// clientStats is what one client address got.
type clientStats struct {
	sent, admitted, denied int
	firstAdmitted          time.Time // when the first admitted request was sent
	lastEnd                time.Time // when the last response arrived
}

// attack sends GET /hello to the servers at urls at rate for duration,
// round-robin over the servers and the clients, and waits for every
// response.
func attack(urls []string) *outcome {
	a := vegeta.NewAttacker(
		vegeta.Timeout(5*time.Second),
		vegeta.MaxWorkers(500),
		vegeta.MaxBody(1<<10),
	)
	o := &outcome{codes: map[uint16]int{}, clients: map[string]*clientStats{}}
	pace := vegeta.ConstantPacer{Freq: rate, Per: time.Second}
	for res := range a.Attack(roundRobin(urls, clients), pace, duration, "hello") {
		o.metrics.Add(res)
		o.codes[res.Code]++
		c := clientOf(res.URL)
		s := o.clients[c]
		if s == nil {
			s = &clientStats{}
			o.clients[c] = s
		}
		s.sent++
		switch res.Code {
		case http.StatusOK:
			s.admitted++
			if s.firstAdmitted.IsZero() || res.Timestamp.Before(s.firstAdmitted) {
				s.firstAdmitted = res.Timestamp
			}
		case http.StatusTooManyRequests:
			s.denied++
		}
		if end := res.End(); end.After(s.lastEnd) {
			s.lastEnd = end
		}
	}
	o.metrics.Close()
	return o
}

// roundRobin returns a Targeter whose i-th target is GET /hello on
// urls[i%len(urls)] from clients[i%len(clients)]. With 3 servers and 8
// clients, every client reaches every server.
func roundRobin(urls, clients []string) vegeta.Targeter {
	var next atomic.Uint64
	return func(tgt *vegeta.Target) error {
		if tgt == nil {
			return vegeta.ErrNilTarget
		}
		i := next.Add(1) - 1
		c := clients[i%uint64(len(clients))]
		*tgt = vegeta.Target{
			Method: http.MethodGet,
			// The query names the client only so that attack can tell the
			// results apart (a vegeta Result keeps the URL, not the
			// request's headers); the server ignores it.
			URL:    urls[i%uint64(len(urls))] + "/hello?client=" + c,
			Header: http.Header{"X-Forwarded-For": {c}},
		}
		return nil
	}
}

// clientOf returns the client a target URL made by roundRobin names.
func clientOf(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return u.Query().Get("client")
}

// checkStatuses fails t for every response of o whose status is not one
// of want, and for every transport error.
func checkStatuses(t *testing.T, run string, o *outcome, want ...int) {
	t.Helper()
	for _, code := range slices.Sorted(maps.Keys(o.codes)) {
		n := o.codes[code]
		switch {
		case code == 0:
			t.Errorf("%s: %d requests failed: %s", run, n, strings.Join(o.metrics.Errors, "; "))
		case code >= 500:
			t.Errorf("%s: %d responses %d, a server error", run, n, code)
		case !slices.Contains(want, int(code)):
			t.Errorf("%s: %d responses %d, want only %v", run, n, code, want)
		}
	}
}

// report returns the figures of the limited run lim and the baseline run
// base as Markdown.
func report(lim, base *outcome) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET /hello on %d servers sharing one redis-server, %d req/s for %v over %d clients; limit %d per %v per client.\n\n",
		instances, rate, duration, len(clients), limit, limitWindow)
	fmt.Fprintf(&b, "| client | sent | admitted (200) | limit | denied (429) |\n")
	fmt.Fprintf(&b, "|---|---:|---:|---:|---:|\n")
	var sent, admitted, denied int
	for _, c := range clients {
		s := lim.clients[c]
		if s == nil {
			s = &clientStats{}
		}
		sent, admitted, denied = sent+s.sent, admitted+s.admitted, denied+s.denied
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d |\n", c, s.sent, s.admitted, limit, s.denied)
	}
	fmt.Fprintf(&b, "| all | %d | %d | %d | %d (%.1f%%) |\n\n",
		sent, admitted, limit*len(clients), denied, percent(denied, sent))
	fmt.Fprintf(&b, "Status codes: limited %s; RATE_LIMIT=off %s.\n\n", codes(lim), codes(base))
	fmt.Fprintf(&b, "| run | requests | rate (req/s) | p50 | p99 |\n")
	fmt.Fprintf(&b, "|---|---:|---:|---:|---:|\n")
	for _, r := range []struct {
		name string
		o    *outcome
	}{{"RATE_LIMIT=off", base}, {"limited", lim}} {
		m := &r.o.metrics
		fmt.Fprintf(&b, "| %s | %d | %.1f | %v | %v |\n", r.name, m.Requests, m.Rate, us(m.Latencies.P50), us(m.Latencies.P99))
	}
	fmt.Fprintf(&b, "| added by the middleware | | | %s | %s |\n",
		signed(lim.metrics.Latencies.P50-base.metrics.Latencies.P50),
		signed(lim.metrics.Latencies.P99-base.metrics.Latencies.P99))
	return b.String()
}

// codes returns o's status codes and their counts, in order.
func codes(o *outcome) string {
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(o.codes)) {
		parts = append(parts, fmt.Sprintf("%d: %d", code, o.codes[code]))
	}
	return strings.Join(parts, ", ")
}

func percent(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

// us rounds d to the microsecond.
func us(d time.Duration) time.Duration { return d.Round(time.Microsecond) }

// signed returns d rounded to the microsecond, with its sign.
func signed(d time.Duration) string {
	if d >= 0 {
		return "+" + us(d).String()
	}
	return us(d).String()
}
