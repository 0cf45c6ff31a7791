package redistest

import (
	"context"
	"testing"
)

func TestStartRestart(t *testing.T) {
	s := Start(t)
	c := s.Client()
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	s.Restart()
	if n := KeyCount(t, c); n != 0 {
		t.Fatalf("after Restart, DBSIZE = %d, want 0", n)
	}
	s.Stop()
	if err := Ping(s.Addr()); err == nil {
		t.Fatal("PING succeeded after Stop")
	}
}

func TestForEach(t *testing.T) {
	seen := map[string]bool{}
	ForEach(t, func(t *testing.T, b Backend) {
		seen[b.Name] = true
		if err := b.Client(t).Ping(context.Background()).Err(); err != nil {
			t.Fatalf("%s: PING: %v", b.Name, err)
		}
		if b.Real() != (b.Name == "redis-server") {
			t.Fatalf("%s: Real() = %v", b.Name, b.Real())
		}
	})
	if !seen["miniredis"] {
		t.Fatal("ForEach did not run miniredis")
	}
}
