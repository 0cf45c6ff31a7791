package grpclimit_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/extra/grpclimit"
	"github.com/redislimit/redislimit/internal/redistest"
)

// unlimited returns server interceptors that admit every call.
func unlimited(t *testing.T) *grpclimit.Interceptors {
	t.Helper()
	lim := newLimiter(t, redistest.NewClient(t, redistest.Mini(t).Addr()), redislimit.FixedWindow(1, time.Minute))
	return newInterceptors(t, lim, grpclimit.WithExempt(checkMethod, watchMethod))
}

func TestUnaryClientPaces(t *testing.T) {
	const every = 50 * time.Millisecond
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		lim := newLimiter(t, b.Client(t), redislimit.TokenBucket(1, every, 1))
		client := newInterceptors(t, lim)
		hc, c := serve(t, unlimited(t), grpc.WithUnaryInterceptor(client.UnaryClient()))
		ctx := context.Background()
		const calls = 4
		start := time.Now()
		for i := range calls {
			if err := check(ctx, hc); err != nil {
				t.Fatalf("call %d: %v", i+1, err)
			}
		}
		// The bucket admits one call at once and one per 50ms after it.
		if elapsed := time.Since(start); elapsed < (calls-1)*every {
			t.Errorf("%d calls took %v, want at least %v", calls, elapsed, (calls-1)*every)
		}
		if n := c.handled.Load(); n != calls {
			t.Errorf("server handled %d calls, want %d", n, calls)
		}
		// The default key is the full method name.
		if r, err := lim.Peek(ctx, checkMethod); err != nil || r.Allowed {
			t.Errorf("Peek(%q) = %+v, %v: want the bucket empty", checkMethod, r, err)
		}
		// A deadline before the next token: not sent, ResourceExhausted.
		short, cancel := context.WithTimeout(ctx, every/5)
		defer cancel()
		if err := check(short, hc); status.Code(err) != codes.ResourceExhausted {
			t.Errorf("call with a short deadline: %v, want ResourceExhausted", err)
		}
		if n := c.attempts.Load(); n != calls {
			t.Errorf("server saw %d calls, want %d", n, calls)
		}
	})
}

func TestUnaryClientKeyAndExempt(t *testing.T) {
	lim := newLimiter(t, redistest.NewClient(t, redistest.Mini(t).Addr()), redislimit.FixedWindow(1, time.Hour))
	key := func(context.Context, string) (string, error) { return "upstream", nil }
	client := newInterceptors(t, lim, grpclimit.WithKeyFunc(key), grpclimit.WithExempt(watchMethod))
	hc, c := serve(t, unlimited(t), grpc.WithUnaryInterceptor(client.UnaryClient()))
	ctx := context.Background()
	if err := check(ctx, hc); err != nil {
		t.Fatal(err)
	}
	if r, err := lim.Peek(ctx, "upstream"); err != nil || r.Allowed {
		t.Errorf("Peek(upstream) = %+v, %v: want the call charged to the key func's key", r, err)
	}
	// The next call would wait an hour: past a 1s deadline, so not sent.
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := check(short, hc); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second call: %v, want ResourceExhausted", err)
	}
	if n := c.attempts.Load(); n != 1 {
		t.Errorf("server saw %d calls, want 1", n)
	}
}

func TestUnaryClientRedisDown(t *testing.T) {
	s := redistest.Start(t)
	lim := newLimiter(t, s.Client(), redislimit.FixedWindow(5, time.Minute))
	client := newInterceptors(t, lim)
	hc, c := serve(t, unlimited(t), grpc.WithUnaryInterceptor(client.UnaryClient()))
	s.Stop()
	if err := check(context.Background(), hc); status.Code(err) != codes.Unavailable {
		t.Errorf("with Redis down: %v, want Unavailable", err)
	}
	if n := c.attempts.Load(); n != 0 {
		t.Errorf("server saw %d calls, want 0", n)
	}
}

// retryConfig makes RESOURCE_EXHAUSTED retryable, with a backoff far
// shorter than the limiter's interval: only the pushback trailer paces
// the retries well enough for each to succeed.
const retryConfig = `{"methodConfig": [{
	"name": [{"service": "grpc.health.v1.Health"}],
	"retryPolicy": {
		"maxAttempts": 5,
		"initialBackoff": "0.01s",
		"maxBackoff": "1s",
		"backoffMultiplier": 2,
		"retryableStatusCodes": ["RESOURCE_EXHAUSTED"]
	}
}]}`

// TestRetryPolicyPushback runs calls from a client with a retry policy
// against a limited server: each denied call is retried once, after the
// pushback, and is then served. Calls in a row from one client, so that
// no other call takes the token a retry waits for.
func TestRetryPolicyPushback(t *testing.T) {
	const (
		every = 50 * time.Millisecond
		burst = 3
		calls = 12
	)
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		lim := newLimiter(t, b.Client(t), redislimit.TokenBucket(1, every, burst))
		hc, c := serve(t, newInterceptors(t, lim), grpc.WithDefaultServiceConfig(retryConfig))
		start := time.Now()
		for i := range calls {
			before := c.attempts.Load()
			if err := check(context.Background(), hc); err != nil {
				t.Fatalf("call %d: %v", i+1, err)
			}
			// Retried after the pushback, a denied call is admitted:
			// a second denial means the client ignored the pushback.
			if n := c.attempts.Load() - before; n > 2 {
				t.Errorf("call %d took %d attempts, want at most 2", i+1, n)
			}
		}
		elapsed := time.Since(start)
		attempts, handled := c.attempts.Load(), c.handled.Load()
		t.Logf("%s: %d calls, %d attempts, %d denied, %d served, in %v", b.Name, calls, attempts, attempts-handled, handled, elapsed)
		if handled != calls {
			t.Errorf("served %d calls, want %d", handled, calls)
		}
		// The call after the burst finds the bucket empty, so the retry
		// path was taken at least once.
		if attempts == handled {
			t.Errorf("no call was denied: the test did not exercise retries")
		}
		// Never more than the limit admits: the burst plus a token per
		// interval elapsed.
		if maxServed := int64(burst) + int64(elapsed/every) + 1; handled > maxServed {
			t.Errorf("served %d calls in %v, more than the limit admits (%d)", handled, elapsed, maxServed)
		}
	})
}
