package algtest_test

import (
	"testing"
	"time"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
)

// Every row holds what its fields document: one algorithm throughout,
// with the capacities the tests and benchmarks count on.
func TestRows(t *testing.T) {
	seen := map[string]bool{}
	for _, row := range algtest.Rows {
		t.Run(row.Name, func(t *testing.T) {
			if row.Name == "" || seen[row.Name] {
				t.Fatalf("row name %q is empty or taken", row.Name)
			}
			seen[row.Name] = true
			configs := []redislimit.Algorithm{row.Small, row.Large, row.Tight, row.New(3, time.Second)}
			for _, st := range row.Steps {
				configs = append(configs, st.Alg)
			}
			configs = append(configs, row.Random...)
			name := row.Small.Name()
			for i, alg := range configs {
				if _, err := redislimit.NewLocal(alg); err != nil && row.Local {
					t.Errorf("config %d: NewLocal: %v", i, err)
				}
				if _, ok := alg.(redislimit.LocalAlgorithm); ok != row.Local {
					t.Errorf("config %d: implements LocalAlgorithm = %v, want Local = %v", i, ok, row.Local)
				}
				if alg.Name() != name {
					t.Errorf("config %d: Name() = %q, want %q, the Name of Small", i, alg.Name(), name)
				}
			}
			if got := row.Small.Limit(); got != 5 {
				t.Errorf("Small.Limit() = %d, want 5", got)
			}
			if got := row.Tight.Limit(); got != algtest.TightLimit {
				t.Errorf("Tight.Limit() = %d, want TightLimit", got)
			}
			if got := row.New(7, time.Hour).Limit(); got != 7 {
				t.Errorf("New(7, time.Hour).Limit() = %d, want 7", got)
			}
			if row.Refill <= 0 || len(row.Steps) == 0 || (len(row.Random) == 0) == row.Local {
				t.Errorf("Refill %v, %d step tests, %d random configurations: want a Refill, steps, and random configurations exactly when Local", row.Refill, len(row.Steps), len(row.Random))
			}
			for i, p := range row.Parts {
				if p.Small.Name() == name {
					t.Errorf("part %d is the row itself", i)
				}
			}
		})
	}
}
