// Package leakcheck finds goroutines a test leaves running.
//
// A check records which goroutines exist, and later waits for every goroutine
// started since then to end. It compares goroutine IDs rather than counts, so
// a goroutine that ends cannot hide one that leaked. Goroutine sets are
// process-wide: a check is only meaningful in a test that does not run in
// parallel with others (no t.Parallel in it or its siblings while it runs).
package leakcheck

import (
	"bytes"
	"runtime"
	"sort"
	"strconv"
	"testing"
	"time"
)

// Timeout is how long the function returned by [Goroutines] waits for the
// goroutines started since its baseline to end: long enough for go-redis's
// background dialer (which sleeps a second between probes) and for sockets
// closed a moment ago to unwind.
const Timeout = 5 * time.Second

// Goroutines records the goroutines running now and returns a function that
// waits up to [Timeout] for every goroutine started since to end. If some are
// still running then, it reports them with their stacks through tb.Errorf.
//
// Call it before creating whatever should not leak, and register the result
// first so that it runs after every other cleanup of the test:
//
//	t.Cleanup(leakcheck.Goroutines(t))
//
// Calling the returned function directly (for example after an explicit
// Close) works too; it may be called more than once. It is safe to call from
// any goroutine.
func Goroutines(tb testing.TB) func() {
	tb.Helper()
	return check(tb, Timeout)
}

func check(tb testing.TB, timeout time.Duration) func() {
	base := make(map[uint64]bool)
	for _, g := range goroutines(false) {
		base[g.id] = true
	}
	baseCount := len(base)
	return func() {
		tb.Helper()
		deadline := time.Now().Add(timeout)
		wait := time.Millisecond
		for {
			var leaked []goroutine
			for _, g := range goroutines(true) {
				if !base[g.id] {
					leaked = append(leaked, g)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				var dump bytes.Buffer
				for _, g := range leaked {
					dump.Write(g.stack)
					dump.WriteString("\n\n")
				}
				tb.Errorf("leakcheck: %d goroutine(s) started after the baseline (%d then, %d now) still running after %v:\n\n%s",
					len(leaked), baseCount, runtime.NumGoroutine(), timeout, dump.Bytes())
				return
			}
			time.Sleep(wait)
			if wait < 50*time.Millisecond {
				wait *= 2
			}
		}
	}
}

// goroutine is one entry of a full stack dump.
type goroutine struct {
	id    uint64
	stack []byte // "goroutine N [state]:" and its frames
}

// goroutines returns every goroutine, or every one but the caller's when
// skipSelf is set (the caller is running the check, so it is no leak).
func goroutines(skipSelf bool) []goroutine {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var gs []goroutine
	// The first entry of the dump is always the calling goroutine.
	for i, entry := range bytes.Split(buf, []byte("\n\n")) {
		if i == 0 && skipSelf {
			continue
		}
		if id, ok := parseID(entry); ok {
			gs = append(gs, goroutine{id: id, stack: entry})
		}
	}
	sort.Slice(gs, func(i, j int) bool { return gs[i].id < gs[j].id })
	return gs
}

// parseID reads N from an entry starting "goroutine N [".
func parseID(entry []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(entry, []byte("goroutine "))
	if !ok {
		return 0, false
	}
	num, _, ok := bytes.Cut(rest, []byte(" "))
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(string(num), 10, 64)
	return id, err == nil
}
