// Command httpserver is an HTTP server whose routes have different rate
// limits, enforced by redislimit's httplimit middleware with the IETF
// RateLimit header fields.
//
//	go run ./examples/httpserver
//	curl -i http://127.0.0.1:8080/hello
//
// Routes, each limited per client IP address:
//
//	GET /hello    20 per 10 s (FixedWindow), policy "hello"
//	GET /search   5 at once, refilling 2 a second, and 100 an hour (All), policy "search"
//	GET /healthz  not limited
//
// Settings, from the environment:
//
//	REDIS_ADDR       host:port of the Redis to share, such as
//	                 127.0.0.1:6379: every copy of the server on that
//	                 Redis shares the limits (default: an embedded
//	                 miniredis of this process alone)
//	LISTEN_ADDR      where to listen (default 127.0.0.1:8080)
//	TRUSTED_PROXIES  comma-separated CIDR prefixes of proxies whose
//	                 X-Forwarded-For is believed (default: none)
//	RATE_LIMIT=off   serve the routes without the middleware
//
// A limiter error (Redis unreachable) is logged and answered with 503 and
// Retry-After. SIGINT or SIGTERM stops the server once the requests in
// flight have finished.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/httplimit"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer mr.Close()
		addr = mr.Addr()
		log.Print("on an embedded miniredis (set REDIS_ADDR to share a real Redis)")
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rdb.Close()

	var trusted []netip.Prefix
	for _, s := range strings.Split(os.Getenv("TRUSTED_PROXIES"), ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("TRUSTED_PROXIES: %w", err)
		}
		trusted = append(trusted, p)
	}
	limited := os.Getenv("RATE_LIMIT") != "off"

	mux := http.NewServeMux()
	route := func(pattern, policy string, alg redislimit.Algorithm, h http.HandlerFunc) error {
		if !limited {
			mux.Handle(pattern, h)
			return nil
		}
		lim, err := redislimit.New(rdb, alg, redislimit.WithPrefix("httpserver:"+policy+":"),
			// A failed decision is answered with 503 by the middleware; the
			// error itself goes to the log.
			redislimit.WithOnError(func(ctx context.Context, err error) {
				slog.ErrorContext(ctx, "rate limiter failed", "policy", policy, "err", err)
			}))
		if err != nil {
			return err
		}
		mw, err := httplimit.New(lim, httplimit.WithPolicyName(policy), httplimit.WithTrustedProxies(trusted...))
		if err != nil {
			return err
		}
		mux.Handle(pattern, mw.Handler(h))
		return nil
	}
	if err := route("GET /hello", "hello", redislimit.FixedWindow(20, 10*time.Second), func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello\n")
	}); err != nil {
		return err
	}
	if err := route("GET /search", "search", redislimit.All(
		redislimit.TokenBucket(2, time.Second, 5),
		redislimit.FixedWindow(100, time.Hour),
	), func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "results for %q\n", r.URL.Query().Get("q"))
	}); err != nil {
		return err
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})

	listen := os.Getenv("LISTEN_ADDR")
	if listen == "" {
		listen = "127.0.0.1:8080"
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- srv.Shutdown(shut) // lets the requests in flight finish
	}()
	log.Printf("listening on %s (rate limits %v)", ln.Addr(), limited)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return <-done
}
