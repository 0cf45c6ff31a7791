package redislimit

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// A state carries only the usage of a state of its own kind: from another
// kind, or from nil, it stays fresh.
func TestCarryFromAnotherKindLeavesFresh(t *testing.T) {
	const now = int64(1_700_000_000_000_000)
	kinds := []LocalAlgorithm{
		FixedWindow(5, time.Minute).(LocalAlgorithm),
		SlidingLog(5, time.Minute).(LocalAlgorithm),
		SlidingWindow(5, time.Minute).(LocalAlgorithm),
		TokenBucket(1, time.Second, 5).(LocalAlgorithm),
	}
	for _, to := range kinds[:3] {
		for _, from := range kinds {
			if from.Name() == to.Name() {
				continue
			}
			used := from.NewLocalState(1)
			used.Decide(now, 5, true)
			for _, f := range []LocalState{used, nil} {
				st := to.NewLocalState(1).(carrier)
				st.carry(f, now)
				if diff := cmp.Diff(to.NewLocalState(1).Decide(now, 1, false), st.Decide(now, 1, false)); diff != "" {
					t.Errorf("%s carried from %T: Decide differs from a fresh state's (-fresh +carried):\n%s", to.Name(), f, diff)
				}
			}
		}
	}
}

// A carried state holds its own copy of the usage: what happens to the
// state it came from afterwards does not reach it, nor the other way.
func TestCarryCopies(t *testing.T) {
	const now = int64(1_700_000_000_000_000)
	for _, alg := range []LocalAlgorithm{
		FixedWindow(5, time.Minute).(LocalAlgorithm),
		SlidingLog(5, time.Minute).(LocalAlgorithm),
		SlidingWindow(5, time.Minute).(LocalAlgorithm),
	} {
		from := alg.NewLocalState(1)
		from.Decide(now, 2, true)
		st := alg.NewLocalState(1).(carrier)
		st.carry(from, now)
		from.Decide(now, 3, true)
		if r := st.Decide(now, 1, false); r.Remaining != 3 {
			t.Errorf("%s: after 2 units carried and 3 more on the original, the copy has %d remaining, want 3", alg.Name(), r.Remaining)
		}
		st.Decide(now, 1, true)
		if r := from.Decide(now, 1, false); r.Remaining != 0 {
			t.Errorf("%s: a unit on the copy changed the original: %d remaining, want 0", alg.Name(), r.Remaining)
		}
	}
}
