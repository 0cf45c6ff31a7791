package httplimit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/redislimit/redislimit"
)

// ErrNilConcurrency is returned by [NewConcurrency] when its
// [redislimit.Concurrency] is nil.
var ErrNilConcurrency = errors.New("httplimit: nil concurrency limit")

// NewConcurrency returns a Middleware that limits how many requests per
// key are in flight at once with c: each request holds a lease
// ([redislimit.Concurrency.Acquire]) while the next handler runs. The
// lease is released when the handler returns or panics (the panic then
// goes on), and extended every third of c's TTL while the handler runs,
// so that a long response (a stream, a download) keeps its slot while the
// lease of a process that died frees itself. An extension that fails is
// tried again at the next tick until the lease is lost
// ([redislimit.ErrLeaseLost]); the handler is not interrupted. Release and
// extensions use the request's context without its cancellation, so a
// client that goes away still frees its slot at once.
//
// A request refused because its key is full gets 429 Too Many Requests,
// Retry-After (the seconds, rounded up, until a slot frees at the latest,
// by expiry) and the problem+json body of
// [New], naming the policy ([WithPolicyName]), unless [WithLimitedHandler]
// answers it. No RateLimit fields are sent: they describe quotas over
// time. When Acquire fails, the request gets the 503 of [New], or
// [WithErrorHandler]'s answer.
//
// The options that say whose request it is, and what answers it, apply
// as for New: [WithKeyFunc], [WithTrustedProxies], [WithForwardedHeader],
// [WithIPv6Prefix], [WithExempt], [WithPolicyName], [WithLimitedHandler]
// and [WithErrorHandler]. [WithCost], [WithLimiterFunc] and
// [WithLegacyHeaders] do not apply and make NewConcurrency return an error
// wrapping [ErrInvalidOption]; so does any option New refuses. A nil c
// returns [ErrNilConcurrency].
//
// Chain it with a rate limit by wrapping one Middleware's Handler in the
// other's.
func NewConcurrency(c *redislimit.Concurrency, opts ...Option) (*Middleware, error) {
	if c == nil {
		return nil, ErrNilConcurrency
	}
	m := withOptions(nil, opts)
	if err := m.check(); err != nil {
		return nil, err
	}
	switch {
	case m.cost != nil:
		return nil, fmt.Errorf("%w: WithCost does not apply to a concurrency limit", ErrInvalidOption)
	case m.choose != nil:
		return nil, fmt.Errorf("%w: WithLimiterFunc does not apply to a concurrency limit", ErrInvalidOption)
	case m.legacy:
		return nil, fmt.Errorf("%w: WithLegacyHeaders does not apply to a concurrency limit", ErrInvalidOption)
	}
	m.conc = c
	return m, nil
}

// serveLeased serves r with next while r holds a lease of m.conc.
func (m *Middleware) serveLeased(w http.ResponseWriter, r *http.Request, next http.Handler) {
	key, err := m.keyOf(r)
	if err != nil {
		m.fail(w, r, err)
		return
	}
	lease, res, err := m.conc.Acquire(r.Context(), key)
	if err != nil {
		m.fail(w, r, err)
		return
	}
	if !res.Allowed {
		w.Header().Set("Retry-After", strconv.FormatInt(seconds(res.RetryAfter), 10))
		if m.onLimited != nil {
			m.onLimited(w, r, res)
			return
		}
		problem(w, http.StatusTooManyRequests, QuotaExceededType,
			"Request cannot be satisfied as too many requests are in flight",
			fmt.Sprintf("Retry in %d s.", seconds(res.RetryAfter)), []string{m.name})
		return
	}
	ctx := context.WithoutCancel(r.Context())
	stop := keepLease(ctx, lease, m.conc.TTL()/3)
	// A deferred call runs when next panics too, and the panic goes on.
	defer func() {
		stop()
		_ = lease.Release(ctx)
	}()
	next.ServeHTTP(w, r)
}

// keepLease extends lease every interval until the returned function is
// called, which waits for the extensions to end, or until the lease is
// lost.
func keepLease(ctx context.Context, lease *redislimit.Lease, interval time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if errors.Is(lease.Extend(ctx), redislimit.ErrLeaseLost) {
					return
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}
