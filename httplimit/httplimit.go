// Package httplimit is net/http middleware that limits requests with a
// [redislimit.Limiter] and tells clients where they stand with the IETF
// RateLimit header fields (draft-ietf-httpapi-ratelimit-headers).
//
//	lim, _ := redislimit.New(rdb, redislimit.TokenBucket(10, time.Second, 20))
//	mw, err := httplimit.New(lim, httplimit.WithTrustedProxies(netip.MustParsePrefix("10.0.0.0/8")))
//	...
//	http.ListenAndServe(addr, mw.Handler(mux))
//
// [WithLimiterFunc] chooses the limiter per request, for a limit per plan
// or tenant. [NewConcurrency] limits the requests in flight per key
// instead, with a [redislimit.Concurrency]: each holds a lease while it
// is served.
//
// By default each request costs 1 on the key of its client's IP address:
// the connection's peer, or, only when the peer is a trusted proxy, the
// first untrusted address in X-Forwarded-For (or, when the request has
// none, Forwarded) read from the right; [WithForwardedHeader] pins one.
// IPv6 clients are grouped by /64, since one host owns a /64.
//
// Every response the middleware decides carries, in Structured Fields
// syntax (RFC 9651):
//
//	RateLimit-Policy: "default";q=<Limit>;w=<window in seconds>
//	RateLimit: "default";r=<Remaining>;t=<seconds>
//
// with one item per part for a limiter on [redislimit.All], named
// "<name>-0", "<name>-1", …. q is the quota's Limit and w its Window
// ([redislimit.Limiter.Quotas]), in whole seconds rounded up, left out when
// the algorithm does not say (a token bucket's w is the time it takes to
// fill from empty: burst × per / rate). r is the Remaining units of the
// decision. t is, for an admitted request, the seconds until the quota is
// full again (ResetAfter), and for a denied one the seconds until the
// request could be admitted (RetryAfter), rounded up and never past
// Retry-After (a part of All that admitted the request included). A denied
// request gets 429 Too Many Requests, Retry-After in whole seconds rounded
// up, and an RFC 9457 problem+json body of type
// "https://iana.org/assignments/http-problem-types#quota-exceeded", with
// the names of the policies that denied it as "violated-policies", unless
// [WithLimitedHandler] answers it. When the limiter fails (Redis is down
// and its failure policy returns the error), the request gets 503 Service
// Unavailable with Retry-After set to [ErrorRetryAfter] and a problem+json
// body, without reaching the next handler, unless [WithErrorHandler]
// answers it; a decision that the failure policy made (Degraded) is served
// as decided. A request that a limiter in shadow mode
// ([redislimit.WithShadowMode]) would deny is served, without
// Retry-After, and its RateLimit fields are those of the denial.
package httplimit

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redislimit/redislimit"
)

// Errors returned by [New].
var (
	// ErrNilLimiter is returned when the limiter is nil and no
	// [WithLimiterFunc] chooses one per request.
	ErrNilLimiter = errors.New("httplimit: nil limiter")
	// ErrInvalidOption is returned, wrapped with a description, when an
	// option's value is out of range. It is [redislimit.ErrInvalidConfig]:
	// httplimit reports bad options with the module's one configuration
	// sentinel, so errors.Is matches either name.
	ErrInvalidOption = redislimit.ErrInvalidConfig
)

// QuotaExceededType is the problem type of the body of a denied request.
const QuotaExceededType = "https://iana.org/assignments/http-problem-types#quota-exceeded"

// ErrorRetryAfter is the Retry-After of the 503 response to a request
// whose decision failed, sent in whole seconds: a short wait, so that
// clients that honour it back off while Redis recovers without being kept
// out long after. [WithErrorHandler] replaces that response.
const ErrorRetryAfter = time.Second

// Middleware limits the requests of the handlers it wraps. It is safe for
// concurrent use.
type Middleware struct {
	lim       *redislimit.Limiter
	key       func(*http.Request) (string, error) // nil: the client's address
	trusted   []netip.Prefix
	fwdHeader string // "": Forwarded when present, else X-Forwarded-For
	v6Bits    int
	name      string
	cost      func(*http.Request) int
	exempt    func(*http.Request) bool
	onLimited func(http.ResponseWriter, *http.Request, redislimit.Result)
	onError   func(http.ResponseWriter, *http.Request, error)
	legacy    bool
	choose    func(*http.Request) (*redislimit.Limiter, error) // nil: lim for every request
	conc      *redislimit.Concurrency                          // NewConcurrency's; nil for New

	fixed    *policy  // lim's; nil when lim is nil
	policies sync.Map // *redislimit.Limiter → *policy, for the limiters choose returned
	nPolicy  atomic.Int32
}

// A policy is what the RateLimit fields say of one limiter.
type policy struct {
	quotas []redislimit.Quota
	names  []string // the sf-string of each item, quoted
	value  string   // the RateLimit-Policy value
}

// maxPolicies bounds the limiters whose policy a Middleware keeps; past
// it, it starts again empty.
const maxPolicies = 4096

// Option configures a [Middleware].
type Option func(*Middleware)

// WithKeyFunc sets how a request's key is found, in place of the client's
// address: an API key or a user ID, say. An error from it is handled as a
// limiter error (see [WithErrorHandler]).
func WithKeyFunc(f func(*http.Request) (string, error)) Option {
	return func(m *Middleware) { m.key = f }
}

// WithTrustedProxies sets the proxies whose forwarding headers are
// believed: a request whose peer is in one of prefixes is keyed by the
// first address, from the right, in its Forwarded or X-Forwarded-For
// header that is not in one of them. With none (the default) the headers
// are ignored, as any client can send them.
func WithTrustedProxies(prefixes ...netip.Prefix) Option {
	return func(m *Middleware) { m.trusted = append(m.trusted, prefixes...) }
}

// WithForwardedHeader sets the one forwarding header that trusted proxies
// write, "X-Forwarded-For" or "Forwarded", and the only one read. By
// default X-Forwarded-For is read when the request has one, which most
// proxies append to, and Forwarded otherwise: then a proxy that writes
// Forwarded alone must drop the X-Forwarded-For a client sends, or the
// client chooses its key. Name the header your proxies write to be safe
// from that.
func WithForwardedHeader(name string) Option {
	return func(m *Middleware) { m.fwdHeader = http.CanonicalHeaderKey(name) }
}

// WithIPv6Prefix sets how many leading bits of an IPv6 client address form
// its key: 64 by default, 128 for each address alone. It must be from 1 to
// 128.
func WithIPv6Prefix(bits int) Option {
	return func(m *Middleware) { m.v6Bits = bits }
}

// WithPolicyName sets the name of the policy in the RateLimit header
// fields: "default" unless set. It must be 1 to 64 printable ASCII
// characters.
func WithPolicyName(name string) Option {
	return func(m *Middleware) { m.name = name }
}

// WithCost sets the cost of a request, in units: 1 unless set. A cost
// below 1 or above the limit is a limiter error (see [WithErrorHandler]).
func WithCost(f func(*http.Request) int) Option {
	return func(m *Middleware) { m.cost = f }
}

// WithExempt sets which requests pass without a decision or headers:
// health checks, say.
func WithExempt(f func(*http.Request) bool) Option {
	return func(m *Middleware) { m.exempt = f }
}

// WithLimitedHandler sets what answers a denied request, in place of the
// 429 problem response. The RateLimit fields and Retry-After are set
// before it is called.
func WithLimitedHandler(f func(http.ResponseWriter, *http.Request, redislimit.Result)) Option {
	return func(m *Middleware) { m.onLimited = f }
}

// WithErrorHandler sets what answers a request whose decision failed (the
// limiter returned an error, or the key function did), in place of the
// 503 problem response with Retry-After [ErrorRetryAfter]; no header is set
// before it is called. The next handler is not called. Unlike the
// Limiter's [redislimit.WithOnError], which only observes an error, this
// handler decides the outcome, as the middleware's answer to a failure is
// a response; to observe errors without changing the response, give the
// Limiter WithOnError.
func WithErrorHandler(f func(http.ResponseWriter, *http.Request, error)) Option {
	return func(m *Middleware) { m.onError = f }
}

// WithLegacyHeaders adds the X-RateLimit-Limit, X-RateLimit-Remaining and
// X-RateLimit-Reset (seconds from now, rounded up; on a denial, as
// Retry-After) fields that older clients read, for the quota with the
// least remaining.
func WithLegacyHeaders() Option {
	return func(m *Middleware) { m.legacy = true }
}

// WithLimiterFunc sets how the limiter of each request is chosen: from
// the plan of the tenant an API key belongs to, say, with limiters derived
// by [redislimit.Limiter.Using] so that a tenant's usage carries over when
// its plan changes. The RateLimit fields describe the chosen limiter. A
// nil limiter with a nil error means New's limiter (an error when New was
// given none); an error is handled as a failed decision (503, or
// [WithErrorHandler]). With it, New's limiter may be nil.
func WithLimiterFunc(f func(*http.Request) (*redislimit.Limiter, error)) Option {
	return func(m *Middleware) { m.choose = f }
}

// New returns a Middleware that decides with lim, or with the limiter
// that [WithLimiterFunc] chooses. It returns [ErrNilLimiter] when lim is
// nil without WithLimiterFunc, or an error wrapping [ErrInvalidOption].
func New(lim *redislimit.Limiter, opts ...Option) (*Middleware, error) {
	m := withOptions(lim, opts)
	if lim == nil && m.choose == nil {
		return nil, ErrNilLimiter
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	if lim != nil {
		m.fixed = m.newPolicy(lim)
	}
	return m, nil
}

// withOptions returns a Middleware on lim with opts applied, unchecked.
func withOptions(lim *redislimit.Limiter, opts []Option) *Middleware {
	m := &Middleware{lim: lim, v6Bits: 64, name: "default"}
	for _, o := range opts {
		if o != nil {
			o(m)
		}
	}
	return m
}

// check returns an error wrapping ErrInvalidOption when an option of m is
// out of range.
func (m *Middleware) check() error {
	if m.v6Bits < 1 || m.v6Bits > 128 {
		return fmt.Errorf("%w: IPv6 prefix of %d bits, want 1 to 128", ErrInvalidOption, m.v6Bits)
	}
	if len(m.name) < 1 || len(m.name) > 64 || strings.IndexFunc(m.name, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
		return fmt.Errorf("%w: policy name %q, want 1 to 64 printable ASCII characters", ErrInvalidOption, m.name)
	}
	if m.fwdHeader != "" && m.fwdHeader != "Forwarded" && m.fwdHeader != "X-Forwarded-For" {
		return fmt.Errorf("%w: forwarding header %q, want Forwarded or X-Forwarded-For", ErrInvalidOption, m.fwdHeader)
	}
	for _, p := range m.trusted {
		if !p.IsValid() {
			return fmt.Errorf("%w: invalid trusted proxy prefix", ErrInvalidOption)
		}
	}
	return nil
}

// newPolicy returns what the RateLimit fields say of lim.
func (m *Middleware) newPolicy(lim *redislimit.Limiter) *policy {
	p := &policy{quotas: lim.Quotas()}
	var items []string
	for i, q := range p.quotas {
		name := m.name
		if len(p.quotas) > 1 {
			name += "-" + strconv.Itoa(i)
		}
		p.names = append(p.names, sfString(name))
		item := p.names[i] + ";q=" + sfInt(int64(q.Limit))
		if q.Window > 0 {
			item += ";w=" + strconv.FormatInt(seconds(q.Window), 10)
		}
		items = append(items, item)
	}
	p.value = strings.Join(items, ", ")
	return p
}

// limiter returns the limiter that decides r, and its policy.
func (m *Middleware) limiter(r *http.Request) (*redislimit.Limiter, *policy, error) {
	if m.choose == nil {
		return m.lim, m.fixed, nil
	}
	lim, err := m.choose(r)
	switch {
	case err != nil:
		return nil, nil, err
	case lim == nil && m.lim == nil:
		return nil, nil, errNoLimiter
	case lim == nil || lim == m.lim:
		return m.lim, m.fixed, nil
	}
	if p, ok := m.policies.Load(lim); ok {
		return lim, p.(*policy), nil
	}
	p := m.newPolicy(lim)
	if m.nPolicy.Add(1) > maxPolicies {
		m.policies.Clear()
		m.nPolicy.Store(1)
	}
	m.policies.Store(lim, p)
	return lim, p, nil
}

// errNoLimiter is the error of a request for which WithLimiterFunc chose
// no limiter, on a Middleware without one of its own.
var errNoLimiter = errors.New("httplimit: no limiter chosen for the request")

// Handler returns next behind the limit: a rate limit for a Middleware
// made by [New], a limit on requests in flight for one made by
// [NewConcurrency].
func (m *Middleware) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.exempt != nil && m.exempt(r) {
			next.ServeHTTP(w, r)
			return
		}
		if m.conc != nil {
			m.serveLeased(w, r, next)
			return
		}
		key, err := m.keyOf(r)
		if err != nil {
			m.fail(w, r, err)
			return
		}
		lim, p, err := m.limiter(r)
		if err != nil {
			m.fail(w, r, err)
			return
		}
		cost := 1
		if m.cost != nil {
			cost = m.cost(r)
		}
		res, err := lim.AllowN(r.Context(), key, cost)
		if err != nil {
			m.fail(w, r, err)
			return
		}
		m.setHeaders(w.Header(), res, p)
		if res.Allowed {
			next.ServeHTTP(w, r)
			return
		}
		if m.onLimited != nil {
			m.onLimited(w, r, res)
			return
		}
		problem(w, http.StatusTooManyRequests, QuotaExceededType,
			"Request cannot be satisfied as assigned quota has been exceeded",
			fmt.Sprintf("Retry in %d s.", seconds(res.RetryAfter)), m.violated(res, p))
	})
}

// keyOf returns the limiter key of r.
func (m *Middleware) keyOf(r *http.Request) (string, error) {
	if m.key != nil {
		return m.key(r)
	}
	a, err := clientAddr(r, m.trusted, m.fwdHeader)
	if err != nil {
		return "", err
	}
	return keyOf(a, m.v6Bits), nil
}

// fail answers a request whose decision failed.
func (m *Middleware) fail(w http.ResponseWriter, r *http.Request, err error) {
	if m.onError != nil {
		m.onError(w, r, err)
		return
	}
	w.Header().Set("Retry-After", strconv.FormatInt(seconds(ErrorRetryAfter), 10))
	problem(w, http.StatusServiceUnavailable, "about:blank", http.StatusText(http.StatusServiceUnavailable),
		"The rate limiter could not decide.", nil)
}

// violated returns the names of the policies that denied res.
func (m *Middleware) violated(res redislimit.Result, p *policy) []string {
	if len(res.Parts) != len(p.quotas) || len(p.quotas) < 2 {
		return []string{m.name}
	}
	var names []string
	for i, part := range res.Parts {
		if !part.Allowed {
			names = append(names, m.name+"-"+strconv.Itoa(i))
		}
	}
	return names
}

// setHeaders sets the RateLimit fields of a decision, and on a denial
// Retry-After (not on a shadowed one, which is served).
func (m *Middleware) setHeaders(h http.Header, res redislimit.Result, pol *policy) {
	parts := res.Parts
	if len(parts) != len(pol.quotas) {
		parts = []redislimit.Result{res}
	}
	// A shadowed denial is served, and its fields say what the denial
	// said.
	denied := !res.Allowed || res.Shadowed
	retry := seconds(res.RetryAfter)
	items := make([]string, len(parts))
	for i, p := range parts {
		t := seconds(p.ResetAfter)
		if !p.Allowed || p.Shadowed {
			t = seconds(p.RetryAfter)
		}
		if denied {
			t = min(t, retry) // never past the denial's retry
		}
		items[i] = pol.names[min(i, len(pol.names)-1)] + ";r=" + sfInt(int64(max(p.Remaining, 0))) + ";t=" + sfInt(t)
	}
	h.Set("RateLimit-Policy", pol.value)
	h.Set("RateLimit", strings.Join(items, ", "))
	if !res.Allowed {
		h.Set("Retry-After", strconv.FormatInt(retry, 10))
	}
	if m.legacy {
		// The quota with the least remaining, the one that binds.
		b := parts[0]
		for _, p := range parts[1:] {
			if p.Remaining < b.Remaining {
				b = p
			}
		}
		reset := seconds(b.ResetAfter)
		if denied {
			reset = retry
		}
		h.Set("X-RateLimit-Limit", strconv.Itoa(b.Limit))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(max(b.Remaining, 0)))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(reset, 10))
	}
}

// maxSFInt is the largest Structured Fields integer: 15 digits.
const maxSFInt = 999_999_999_999_999

// sfInt formats v as a Structured Fields integer, capped at its 15 digits.
func sfInt(v int64) string {
	return strconv.FormatInt(min(v, maxSFInt), 10)
}

// seconds returns d in whole seconds, rounded up.
func seconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// sfString returns s as a Structured Fields string: quoted, with '"' and
// '\' escaped. s holds printable ASCII only (New checks it).
func sfString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// problem writes an RFC 9457 problem details response; violated, when not
// nil, is the quota-exceeded type's list of the policies that denied.
func problem(w http.ResponseWriter, status int, typ, title, detail string, violated []string) {
	body, _ := json.Marshal(struct {
		Type     string   `json:"type"`
		Title    string   `json:"title"`
		Status   int      `json:"status"`
		Detail   string   `json:"detail,omitempty"`
		Violated []string `json:"violated-policies,omitempty"`
	}{typ, title, status, detail, violated})
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
