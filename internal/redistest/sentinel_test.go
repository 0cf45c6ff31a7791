package redistest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestSentinel(t *testing.T) {
	t.Parallel()
	start := time.Now()
	st := StartSentinel(t, 1)
	t.Logf("master + replica + 1 sentinel up in %v", time.Since(start))
	ctx := context.Background()
	old := st.Master()
	if old != st.Servers()[0] {
		t.Fatalf("Master() = %s, want the first data node %s", old.Addr(), st.Servers()[0].Addr())
	}
	c := st.Client(func(o *redis.FailoverOptions) { o.MaxRetries = -1 })
	if err := c.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatalf("SET via failover client: %v", err)
	}
	if v, err := old.Client().Get(ctx, "k").Result(); err != nil || v != "before" {
		t.Fatalf("GET on the master = %q, %v; want the value set via the failover client", v, err)
	}
	if n, err := old.Client().Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v; want 1", n, err)
	}

	began := time.Now()
	promoted := st.Failover(15 * time.Second)
	t.Logf("SENTINEL FAILOVER done in %v", time.Since(began))
	if promoted != st.Servers()[1] {
		t.Fatalf("Failover() = %s, want the replica %s", promoted.Addr(), st.Servers()[1].Addr())
	}
	if got := st.Master(); got != promoted {
		t.Fatalf("Master() after failover = %s, want %s", got.Addr(), promoted.Addr())
	}
	fails := writeUntilOK(t, c, promoted, 10*time.Second)
	t.Logf("failover client writes to the new master %v after SENTINEL FAILOVER, %d writes failed", time.Since(began), fails)
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "before" {
		t.Fatalf("GET after failover = %q, %v; want the replicated value", v, err)
	}
}

func TestSentinelMasterStopped(t *testing.T) {
	t.Parallel()
	start := time.Now()
	st := StartSentinel(t, 3)
	t.Logf("master + replica + 3 sentinels up in %v", time.Since(start))
	c := st.Client(func(o *redis.FailoverOptions) { o.MaxRetries = -1 })
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	old := st.Master()
	old.Stop()
	began := time.Now()
	promoted := st.WaitFailover(old, 20*time.Second)
	t.Logf("sentinel promoted %s %v after the master stopped", promoted.Addr(), time.Since(began))
	if promoted == old {
		t.Fatal("WaitFailover returned the stopped master")
	}
	fails := writeUntilOK(t, c, promoted, 10*time.Second)
	t.Logf("failover client works %v after the master stopped, %d writes failed", time.Since(began), fails)
}

// writeUntilOK sets a fresh key through c every 10 ms until a write lands
// on want, checked by reading it back from want directly, and returns how
// many writes failed or landed elsewhere.
func writeUntilOK(t *testing.T, c *redis.Client, want *Server, timeout time.Duration) int {
	t.Helper()
	ctx := context.Background()
	direct := want.Client()
	deadline := time.Now().Add(timeout)
	for fails := 0; ; fails++ {
		if time.Now().After(deadline) {
			t.Fatalf("no write reached %s within %v (%d failed)", want.Addr(), timeout, fails)
		}
		k := fmt.Sprintf("probe%d", fails)
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := c.Set(cctx, k, "x", 0).Err()
		cancel()
		if err == nil {
			if n, _ := direct.Exists(ctx, k).Result(); n == 1 {
				return fails
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}
