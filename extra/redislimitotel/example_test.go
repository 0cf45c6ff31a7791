package redislimitotel_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/extra/redislimitotel"
)

// The observer on a Prometheus exporter: the decisions counter as
// Prometheus scrapes it from /metrics.
func ExampleNewObserver_prometheus() {
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	if err != nil {
		panic(err)
	}
	obs, err := redislimitotel.NewObserver(sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter)))
	if err != nil {
		panic(err)
	}
	// In process for the example; redislimit.New(rdb, …) the same way.
	lim, err := redislimit.NewLocal(redislimit.TokenBucket(1, time.Minute, 3), redislimit.WithObserver(obs))
	if err != nil {
		panic(err)
	}
	for i := 0; i < 5; i++ {
		_, _ = lim.Allow(context.Background(), "client-1")
	}

	// What a scrape of the /metrics handler returns.
	srv := httptest.NewServer(promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "redislimit_decisions_total{") {
			fmt.Println(line)
		}
	}
	// Output:
	// redislimit_decisions_total{redislimit_algorithm="tb",redislimit_deny_cache="false",redislimit_outcome="allowed"} 3
	// redislimit_decisions_total{redislimit_algorithm="tb",redislimit_deny_cache="false",redislimit_outcome="denied"} 2
}
