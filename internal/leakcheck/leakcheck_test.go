package leakcheck

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a testing.TB that keeps what Errorf reports instead of failing.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) report() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.errors, "\n")
}

//go:noinline
func parkedUntilClosed(c chan struct{}, done *sync.WaitGroup) {
	defer done.Done()
	<-c
}

// startParked starts a goroutine that blocks until the returned function
// is called, which waits for it to end.
func startParked() (stop func()) {
	c := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go parkedUntilClosed(c, &wg)
	return func() { close(c); wg.Wait() }
}

func TestGoroutines(t *testing.T) {
	tests := []struct {
		name string
		// before runs ahead of the baseline and after between the baseline
		// and the check; each returns a function that stops whatever it
		// started once the check is done.
		before   func() (stop func())
		after    func() (stop func())
		wantLeak bool
	}{
		{
			name:  "nothing started",
			after: func() func() { return func() {} },
		},
		{
			name: "goroutine ended before the check",
			after: func() func() {
				var wg sync.WaitGroup
				wg.Add(1)
				go func() { wg.Done() }()
				wg.Wait()
				return func() {}
			},
		},
		{
			name: "goroutine ends while the check waits",
			after: func() func() {
				go time.Sleep(100 * time.Millisecond)
				return func() {}
			},
		},
		{
			name:     "goroutine still blocked",
			after:    startParked,
			wantLeak: true,
		},
		{
			name:   "goroutine from before the baseline is not a leak",
			before: startParked,
			after:  func() func() { return func() {} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				stop := tt.before()
				defer stop()
			}
			r := &recorder{TB: t}
			done := check(r, 300*time.Millisecond)
			stop := tt.after()
			done()
			stop()
			got := r.report()
			if leaked := got != ""; leaked != tt.wantLeak {
				t.Fatalf("leak reported = %v, want %v; report:\n%s", leaked, tt.wantLeak, got)
			}
			if tt.wantLeak && !strings.Contains(got, "parkedUntilClosed") {
				t.Errorf("report does not show the leaked goroutine's stack:\n%s", got)
			}
		})
	}
}

// TestGoroutinesSwap checks that a goroutine ending cannot hide another that
// started: the count is back to the baseline, but the set is not.
func TestGoroutinesSwap(t *testing.T) {
	stopOld := startParked()
	r := &recorder{TB: t}
	done := check(r, 100*time.Millisecond)
	stopOld()
	stopNew := startParked()
	defer stopNew()

	done()
	if r.report() == "" {
		t.Fatal("no leak reported for a goroutine that replaced one from the baseline")
	}
}

// TestGoroutinesOtherCaller checks that the goroutine taking the baseline
// is not reported when the check runs on another goroutine.
func TestGoroutinesOtherCaller(t *testing.T) {
	r := &recorder{TB: t}
	done := check(r, 100*time.Millisecond)
	finished := make(chan struct{})
	go func() { done(); close(finished) }()
	<-finished
	if got := r.report(); got != "" {
		t.Fatalf("leak reported for the test's own goroutine:\n%s", got)
	}
}

func TestParseID(t *testing.T) {
	tests := []struct {
		in     string
		want   uint64
		wantOK bool
	}{
		{"goroutine 17 [running]:\nmain.main()", 17, true},
		{"goroutine 1 [chan receive, 2 minutes]:", 1, true},
		{"goroutine x [running]:", 0, false},
		{"created by main.main", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseID([]byte(tt.in))
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseID(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}
