package redislimitotel_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/extra/redislimitotel"
)

func TestObserver(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	obs, err := redislimitotel.NewObserver(mp)
	if err != nil {
		t.Fatal(err)
	}
	lim, err := redislimit.NewLocal(redislimit.FixedWindow(2, time.Hour), redislimit.WithObserver(obs))
	if err != nil {
		t.Fatal(err)
	}
	shadow, err := redislimit.NewLocal(redislimit.SlidingLog(1, time.Hour), redislimit.WithObserver(obs), redislimit.WithShadowMode())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		_, _ = lim.Allow(ctx, "secret-user-key")
		_, _ = shadow.Allow(ctx, "secret-user-key")
	}
	_, _ = lim.Allow(ctx, "")
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int64{}
	var histCount uint64
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != redislimitotel.ScopeName {
			t.Errorf("scope %q", sm.Scope.Name)
		}
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				if m.Name != "redislimit.decisions" || !d.IsMonotonic {
					t.Errorf("counter %q, monotonic %v", m.Name, d.IsMonotonic)
				}
				for _, p := range d.DataPoints {
					for _, kv := range p.Attributes.ToSlice() {
						if kv.Value.Emit() == "secret-user-key" {
							t.Errorf("the user key is an attribute: %v", kv)
						}
					}
					alg, _ := p.Attributes.Value(redislimitotel.AlgorithmKey)
					out, _ := p.Attributes.Value(redislimitotel.OutcomeKey)
					if hit, ok := p.Attributes.Value(redislimitotel.DenyCacheKey); !ok || hit.AsBool() {
						t.Errorf("deny_cache attribute %v, %v", hit, ok)
					}
					counts[alg.AsString()+"/"+out.AsString()] += p.Value
				}
			case metricdata.Histogram[float64]:
				if m.Name != "redislimit.decision.duration" || m.Unit != "s" {
					t.Errorf("histogram %q in %q", m.Name, m.Unit)
				}
				for _, p := range d.DataPoints {
					histCount += p.Count
					if p.Sum < 0 {
						t.Errorf("negative duration sum %v", p.Sum)
					}
				}
			default:
				t.Errorf("unexpected metric %q of %T", m.Name, m.Data)
			}
		}
	}
	want := map[string]int64{"fw/allowed": 2, "fw/denied": 3, "fw/error": 1, "sl/allowed": 1, "sl/shadowed": 4}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("decisions %s = %d, want %d (all: %v)", k, counts[k], v, counts)
		}
	}
	if histCount != 11 {
		t.Errorf("%d durations recorded, want 11", histCount)
	}
	if _, err := redislimitotel.NewObserver(nil); err == nil {
		t.Error("NewObserver(nil): no error")
	}
	_ = attribute.Key("")
}
