package admitcheck

import (
	"errors"
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

func TestTokenBucket(t *testing.T) {
	// Burst 2, 1 token per ms from t0 = 0: by 1ms at most 3 calls.
	within := New([]Call{{0, 10}, {0, 20}, {500, ms}, {ms, 2 * ms}})
	if e := within.TokenBucket(0, 2, 1000, time.Second); e.Over > 0 {
		t.Errorf("calls within the bound: %v", e)
	}
	over := New([]Call{{0, 10}, {0, 20}, {500, ms}, {ms - 2, ms - 1}})
	e := over.TokenBucket(0, 2, 1000, time.Second)
	if e.Over <= 0 || e.Count != 4 || e.At != ms {
		t.Errorf("a fourth call by 1ms: %v, want a breach at 1ms by 4 calls", e)
	}
}

func TestCertainlyIn(t *testing.T) {
	c := New([]Call{{0, 5}, {10, 20}, {15, 30}, {40, 41}})
	for _, tc := range []struct {
		a, b int64
		want int
	}{
		{0, 100, 4},
		{10, 31, 2},
		{11, 31, 1}, // the call started at 10 may have taken effect before 11
		{10, 30, 1}, // the call returned at 30 may have taken effect at 30
		{50, 60, 0},
	} {
		if got := c.CertainlyIn(tc.a, tc.b); got != tc.want {
			t.Errorf("CertainlyIn(%d, %d) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestWindows(t *testing.T) {
	w := 100 * time.Millisecond
	peeks := []Peeked{
		{Start: 10 * ms, End: 11 * ms, ResetAfter: 90 * time.Millisecond}, // end in [100, 101]ms
		{Start: 50 * ms, End: 50*ms + 100, ResetAfter: 50 * time.Millisecond},
		{Start: 100 * ms, End: 102 * ms, ResetAfter: 0},
		{Start: 120 * ms, End: 121 * ms, ResetAfter: 81 * time.Millisecond}, // end in [201, 202]ms
	}
	ends := WindowEnds(peeks, 0)
	want := []Span{{100 * ms, 100*ms + 100}, {201 * ms, 202 * ms}}
	if len(ends) != len(want) || ends[0] != want[0] || ends[1] != want[1] {
		t.Fatalf("WindowEnds = %v, want %v", ends, want)
	}
	calls := []Call{{ms, ms}, {2 * ms, 2 * ms}, {110 * ms, 110 * ms}, {150 * ms, 150 * ms}}
	if e := New(calls).Windows(ends, w, 2); e.Over > 0 {
		t.Errorf("two calls per window: %v", e)
	}
	calls = append(calls, Call{199 * ms, 199 * ms})
	if e := New(calls).Windows(ends, w, 2); e.Over != 1 {
		t.Errorf("three calls in the second window: %v, want over by 1", e)
	}
	if e := New(calls).Sliding(w, 3); e.Over > 0 {
		t.Errorf("Sliding(100ms, 3): %v", e)
	}
	if e := New(calls).Sliding(w, 2); e.Over != 1 {
		t.Errorf("Sliding(100ms, 2): %v, want over by 1", e)
	}
}

func TestWorstIsTheClosest(t *testing.T) {
	// Far under the bound everywhere: the worst moment is still reported.
	c := New([]Call{{0, 10}, {5 * ms, 5 * ms}})
	e := c.TokenBucket(0, 1000, 1000, time.Second)
	if e.Count != 1 || e.At != 10 {
		t.Errorf("TokenBucket: %v, want 1 call by 10ns", e)
	}
}

func TestMet(t *testing.T) {
	for _, tc := range []struct {
		calls, admitted int64
		ok              bool
	}{
		{2000, 950, true},
		{2000, 899, false},
		{1099, 1000, false},
	} {
		if err := Met(tc.calls, tc.admitted, 1000); (err == nil) != tc.ok {
			t.Errorf("Met(%d, %d, 1000) = %v, want ok %v", tc.calls, tc.admitted, err, tc.ok)
		}
	}
}

// Record keeps the admitted calls with their times, counts every call,
// stops at the first call that returns at the deadline, and stops at an
// error.
func TestRecord(t *testing.T) {
	i := 0
	deadline := time.Now().Add(20 * time.Millisecond).UnixNano()
	admitted, calls, err := Record(deadline, func() (bool, error) {
		i++
		time.Sleep(time.Millisecond)
		return i%2 == 1, nil
	})
	if err != nil || calls != int64(i) || len(admitted) != (i+1)/2 {
		t.Fatalf("%d calls, %d admitted, %v; want %d calls, %d admitted", calls, len(admitted), err, i, (i+1)/2)
	}
	for _, c := range admitted {
		if c.End < c.Start {
			t.Errorf("call ends before it starts: %+v", c)
		}
	}
	if last := admitted[len(admitted)-1].End; calls > 2 && admitted[0].Start > last {
		t.Errorf("calls out of order")
	}
	boom := errors.New("boom")
	_, calls, err = Record(time.Now().Add(time.Hour).UnixNano(), func() (bool, error) { return false, boom })
	if !errors.Is(err, boom) || calls != 0 {
		t.Errorf("%d calls, %v; want 0 and the error", calls, err)
	}
}
