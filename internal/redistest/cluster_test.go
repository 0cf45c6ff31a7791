package redistest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestCluster(t *testing.T) {
	t.Parallel()
	start := time.Now()
	cl := StartCluster(t, 3, 1)
	t.Logf("3 masters + 3 replicas up in %v", time.Since(start))
	ctx := context.Background()

	ms := cl.Masters()
	if len(ms) != 3 {
		t.Fatalf("Masters() = %d nodes, want 3", len(ms))
	}
	for i, m := range ms {
		if m != cl.Nodes()[i] {
			t.Errorf("Masters()[%d] = %s, want the %d-th started node %s", i, m.Addr(), i, cl.Nodes()[i].Addr())
		}
	}
	c := cl.Client(func(o *redis.ClusterOptions) { o.ClusterStateReloadInterval = 250 * time.Millisecond })
	for i, m := range ms {
		for _, k := range cl.KeysOn(m, "user", 5) {
			if got := cl.MasterFor("rl:fw:{" + k + "}"); got != m {
				t.Fatalf("MasterFor(%q) = %s, want %s", k, got.Addr(), m.Addr())
			}
			if err := c.Set(ctx, "rl:fw:{"+k+"}", i, 0).Err(); err != nil {
				t.Fatalf("cluster SET: %v", err)
			}
			// A direct GET on the master proves the key lives there: any
			// other node would answer MOVED.
			if got, err := m.Client().Get(ctx, "rl:fw:{"+k+"}").Int(); err != nil || got != i {
				t.Fatalf("GET on master %d = %d, %v; want %d", i, got, err, i)
			}
		}
	}
	t.Logf("%v", time.Since(start))
	key := "rl:fw:{" + cl.KeysOn(ms[0], "victim", 1)[0] + "}"
	if err := c.Set(ctx, key, "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := ms[0].Client().Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT = %d, %v", n, err)
	}
	killed := time.Now()
	if got := cl.KillMaster(0); got != ms[0] {
		t.Fatalf("KillMaster(0) = %s, want %s", got.Addr(), ms[0].Addr())
	}
	fails := 0
	var lastErr error
	for time.Since(killed) < 20*time.Second {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		v, err := c.Get(cctx, key).Result()
		cancel()
		if err == nil {
			if v != "before" {
				t.Fatalf("GET after failover = %q", v)
			}
			break
		}
		fails++
		lastErr = err
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("client GET works again %v after kill, %d failed (last %v)", time.Since(killed), fails, lastErr)
	cl.WaitFailover(20 * time.Second)
	t.Logf("WaitFailover returned %v after kill", time.Since(killed))
	if got := cl.MasterFor(key); got != cl.Nodes()[3] {
		t.Fatalf("after failover MasterFor = %s, want the replica %s", got.Addr(), cl.Nodes()[3].Addr())
	}
	_ = errors.Is
	_ = redis.Nil
}
