// Package redislimitotel records the decisions of a redislimit.Limiter as
// OpenTelemetry metrics:
//
//	obs, err := redislimitotel.NewObserver(otel.GetMeterProvider())
//	...
//	lim, err := redislimit.New(rdb, alg, redislimit.WithObserver(obs))
//
// Two instruments, both with the attributes redislimit.algorithm (the
// algorithm's Name) and redislimit.outcome ("allowed", "denied",
// "degraded", "error", or "shadowed" for a call that a limiter in shadow
// mode admitted though its limit denied it):
//
//   - redislimit.decisions, a counter of decisions, with also
//     redislimit.deny_cache (true when the deny cache answered);
//   - redislimit.decision.duration, a histogram of how long decisions
//     took, in seconds.
//
// The user's key is never an attribute: it would make one time series per
// client.
package redislimitotel

import (
	"context"
	"fmt"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/redislimit/redislimit"
)

// ScopeName is the instrumentation scope of the meter the observer uses.
const ScopeName = "github.com/redislimit/redislimit/extra/redislimitotel"

// Attribute keys.
const (
	AlgorithmKey = attribute.Key("redislimit.algorithm")
	OutcomeKey   = attribute.Key("redislimit.outcome")
	DenyCacheKey = attribute.Key("redislimit.deny_cache")
)

// NewObserver returns a [redislimit.Observer] that records every decision
// into a meter of mp. It returns an error when an instrument cannot be
// created.
func NewObserver(mp metric.MeterProvider) (redislimit.Observer, error) {
	if mp == nil {
		return nil, fmt.Errorf("redislimitotel: nil MeterProvider")
	}
	m := mp.Meter(ScopeName)
	decisions, err := m.Int64Counter("redislimit.decisions",
		metric.WithDescription("Rate-limit decisions, by outcome."),
		metric.WithUnit("{decision}"))
	if err != nil {
		return nil, err
	}
	duration, err := m.Float64Histogram("redislimit.decision.duration",
		metric.WithDescription("How long rate-limit decisions took."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
	if err != nil {
		return nil, err
	}
	o := &observer{decisions: decisions, duration: duration}
	return o.observe, nil
}

type observer struct {
	decisions metric.Int64Counter
	duration  metric.Float64Histogram
	sets      sync.Map // setKey → *attrs: built once per combination
}

type setKey struct {
	alg     string
	outcome redislimit.Outcome
	hit     bool
}

type attrs struct {
	count, time metric.MeasurementOption
}

func (o *observer) observe(ctx context.Context, ob redislimit.Observation) {
	k := setKey{ob.Algorithm, ob.Outcome, ob.DenyCacheHit}
	v, ok := o.sets.Load(k)
	if !ok {
		base := []attribute.KeyValue{AlgorithmKey.String(ob.Algorithm), OutcomeKey.String(ob.Outcome.String())}
		v, _ = o.sets.LoadOrStore(k, &attrs{
			count: metric.WithAttributeSet(attribute.NewSet(append(base, DenyCacheKey.Bool(ob.DenyCacheHit))...)),
			time:  metric.WithAttributeSet(attribute.NewSet(base...)),
		})
	}
	a := v.(*attrs)
	o.decisions.Add(ctx, 1, a.count)
	o.duration.Record(ctx, ob.Latency.Seconds(), a.time)
}
