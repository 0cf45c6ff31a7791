package redislimit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
	"github.com/redislimit/redislimit/internal/redistest"
)

// sentinels are the errors bad input and bad configuration may produce.
var sentinels = []error{
	redislimit.ErrNilAlgorithm, redislimit.ErrInvalidConfig, redislimit.ErrEmptyKey,
	redislimit.ErrKeyTooLong, redislimit.ErrInvalidCost, redislimit.ErrCostExceedsLimit,
}

func isSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// fuzzAlgorithm builds the algorithm of row which % len(algtest.Rows)
// from fuzzed parameters, valid or not.
func fuzzAlgorithm(which uint8, limit int, span int64) redislimit.Algorithm {
	return algtest.Rows[int(which)%len(algtest.Rows)].New(limit, time.Duration(span))
}

// FuzzAllowN feeds keys, costs and configurations to New, NewLocal and
// AllowN: no panic, errors are sentinels, and a decision keeps the Result
// contract. The Redis-backed limiter runs on miniredis.
func FuzzAllowN(f *testing.F) {
	// which picks a row of algtest.Rows: 0 FixedWindow, 1 SlidingLog,
	// 2 SlidingWindow, 3 TokenBucket, 4 All, 5 CalendarQuota.
	f.Add("user", 1, uint8(0), 5, int64(time.Minute), 1)
	f.Add("", 1, uint8(1), 5, int64(time.Minute), 1)
	f.Add("k", 0, uint8(3), 5, int64(time.Second), 2)
	f.Add("k", 6, uint8(0), 5, int64(time.Second), 1)
	f.Add("{x}", 3, uint8(1), 3, int64(time.Millisecond), 7)
	f.Add("k", 1, uint8(3), 0, int64(time.Second), 1)
	f.Add("k", 1, uint8(0), 5, int64(-1), 1)
	f.Add("k", 1, uint8(3), 1<<40, int64(time.Hour), -3)
	f.Add("k", 2, uint8(2), 5, int64(time.Minute), 1)
	f.Add("k", 2, uint8(4), 5, int64(time.Minute), 2)
	f.Add("k", 3, uint8(5), 5, int64(24*time.Hour), 2)
	f.Add("k", 1, uint8(5), 5, int64(0), 1)
	m := redistest.Mini(f)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	f.Cleanup(func() { _ = c.Close() })
	f.Fuzz(func(t *testing.T, key string, n int, which uint8, limit int, span int64, instances int) {
		alg := fuzzAlgorithm(which, limit, span)
		opts := []redislimit.Option{redislimit.WithLocalInstances(instances), redislimit.WithTimeout(time.Minute)}
		local, lerr := redislimit.NewLocal(alg, opts...)
		remote, rerr := redislimit.New(c, alg, append(opts, redislimit.WithFailurePolicy(redislimit.FailLocal))...)
		for _, err := range []error{lerr, rerr} {
			if err != nil && !isSentinel(err) {
				t.Fatalf("New: %v is not a sentinel error", err)
			}
		}
		for _, lim := range []*redislimit.Limiter{local, remote} {
			if lim != nil {
				fuzzDecide(t, lim, key, n)
			}
		}
	})
}

// fuzzDecide calls AllowN and checks what it returns: a sentinel error
// with the zero Result, or a Result that keeps the contract and was made
// by Redis (or in process), not by the failure policy. It reports whether
// there was a Result.
func fuzzDecide(t *testing.T, lim *redislimit.Limiter, key string, n int) (redislimit.Result, bool) {
	t.Helper()
	r, err := lim.AllowN(context.Background(), key, n)
	if err != nil {
		if !isSentinel(err) {
			t.Fatalf("AllowN(%q, %d): %v is not a sentinel error", key, n, err)
		}
		if !cmp.Equal(r, redislimit.Result{}) {
			t.Fatalf("AllowN returned %+v alongside %v", r, err)
		}
		return r, false
	}
	checkResult(t, r)
	if r.Degraded {
		t.Fatalf("AllowN on a healthy Redis = %+v, degraded", r)
	}
	return r, true
}

// checkResult checks the contract every Result keeps.
func checkResult(t *testing.T, r redislimit.Result) {
	t.Helper()
	switch {
	case r.Limit < 1, r.Remaining < 0, r.Remaining > r.Limit:
		t.Fatalf("Result %+v: Remaining outside [0, Limit]", r)
	case r.RetryAfter < 0, r.ResetAfter < 0, r.RetryAfter > redislimit.MaxWindow, r.ResetAfter > redislimit.MaxWindow:
		t.Fatalf("Result %+v: durations outside [0, MaxWindow]", r)
	case r.Allowed != (r.RetryAfter == 0):
		t.Fatalf("Result %+v: RetryAfter must be 0 exactly when allowed", r)
	}
}

// FuzzParseReply feeds the reply parser arbitrary replies, decoded from
// bytes into the values go-redis produces (arrays, integers, strings,
// floats, booleans, nil, errors): a malformed reply is an error wrapping
// ErrMalformedReply, never a panic, and a reply it accepts keeps the
// Result contract.
func FuzzParseReply(f *testing.F) {
	f.Add([]byte{'a', 4, 'i', 1, 'i', 4, 'i', 0, 'i', 9})
	f.Add([]byte{'a', 4, 'i', 0, 'i', 0, 'i', 5, 'i', 5})
	f.Add([]byte{'a', 4, 'i', 0, 'i', 0, 'i', 0, 'i', 0})
	f.Add([]byte{'a', 3, 'i', 1, 'i', 4, 'i', 0})
	f.Add([]byte{'a', 4, 'i', 1, 's', 'x', 'i', 0, 'i', 0})
	f.Add([]byte{'a', 4, 'i', 2, 'i', 1, 'n', 'a', 1, 'i', 1})
	f.Add([]byte{'e'})
	f.Add([]byte{'n'})
	f.Add([]byte{'i', 255, 255, 255, 255, 255, 255, 255, 127})
	f.Fuzz(func(t *testing.T, data []byte) {
		reply, _ := decodeReply(data, 0)
		r, err := redislimit.ParseReply(reply)
		if err != nil {
			if !errors.Is(err, redislimit.ErrMalformedReply) {
				t.Fatalf("ParseReply(%#v) = %v, want an error wrapping ErrMalformedReply", reply, err)
			}
			if !cmp.Equal(r, redislimit.Result{}) {
				t.Fatalf("ParseReply returned %+v alongside %v", r, err)
			}
			return
		}
		r.Limit = max(r.Remaining, 1)
		checkResult(t, r)
	})
}

// decodeReply reads one reply value from data: a tag byte, then its
// content. It returns the value and the rest of data.
func decodeReply(data []byte, depth int) (any, []byte) {
	if len(data) == 0 {
		return nil, nil
	}
	tag, data := data[0], data[1:]
	switch tag {
	case 'a': // array: a length byte, then its elements
		if depth > 4 || len(data) == 0 {
			return []any{}, data
		}
		n := int(data[0] % 8)
		data = data[1:]
		a := make([]any, 0, n)
		for i := 0; i < n; i++ {
			var v any
			v, data = decodeReply(data, depth+1)
			a = append(a, v)
		}
		return a, data
	case 'i': // integer: up to 8 little-endian bytes, sign from the last
		var v int64
		k := min(len(data), 8)
		for i := k - 1; i >= 0; i-- {
			v = v<<8 | int64(data[i])
		}
		if k == 1 {
			v = int64(int8(data[0]))
			if v < 0 {
				v = -v
			}
		}
		return v, data[k:]
	case 's':
		k := min(len(data), 4)
		return string(data[:k]), data[k:]
	case 'f':
		if len(data) == 0 {
			return 0.5, data
		}
		return float64(data[0]) / 3, data[1:]
	case 'b':
		return len(data)%2 == 0, data
	case 'e':
		return redis.Nil, data
	default:
		return nil, data
	}
}
