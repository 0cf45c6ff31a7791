package redistest

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
)

func TestKeySlot(t *testing.T) {
	// Fixed values from the Redis Cluster specification's CRC16 check
	// value and its hash tag examples.
	tests := []struct {
		key  string
		want int
	}{
		{"123456789", 0x31C3},
		{"foo", 12182},
		{"{foo}.bar", 12182},
		{"x{foo}y{bar}", 12182},
		{"foo{}{bar}", KeySlot("foo{}{bar}")},
		{"foo{{bar}}zap", KeySlot("{bar")},
		{"rl:fw:{user42}", KeySlot("user42")},
		{"", 0},
	}
	for _, tt := range tests {
		if got := KeySlot(tt.key); got != tt.want {
			t.Errorf("KeySlot(%q) = %d, want %d", tt.key, got, tt.want)
		}
	}
	if KeySlot("foo{}{bar}") == KeySlot("bar") {
		t.Errorf("KeySlot(%q) used the tag after an empty one", "foo{}{bar}")
	}
}

func TestParseClusterNodes(t *testing.T) {
	out := "07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected\n" +
		"e7d1 127.0.0.1:30001@40001,host-a myself,master - 0 0 1 connected 0-5460 6000 [5461->-292f]\n" +
		"292f 127.0.0.1:30002@40002 master,fail? - 1426238316232 0 2 disconnected\n"
	got, err := parseClusterNodes(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]clusterNode{
		"07c3": {addr: "127.0.0.1:30004", flags: []string{"slave"}, master: "e7d1", connected: true},
		"e7d1": {addr: "127.0.0.1:30001", flags: []string{"myself", "master"}, connected: true, slots: [][2]int{{0, 5460}, {6000, 6000}}},
		"292f": {addr: "127.0.0.1:30002", flags: []string{"master", "fail?"}},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(clusterNode{})); diff != "" {
		t.Errorf("parseClusterNodes mismatch (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"id addr", "e7d1 127.0.0.1:1@2 master - 0 0 1 connected 5-2", "e7d1 127.0.0.1:1@2 master - 0 0 1 connected 16384"} {
		if _, err := parseClusterNodes(bad); err == nil {
			t.Errorf("parseClusterNodes(%q) = nil error", bad)
		}
	}
}

func TestCluster(t *testing.T) {
	t.Parallel()
	start := time.Now()
	cl := StartCluster(t, 3, 1)
	t.Logf("3 masters + 3 replicas up in %v", time.Since(start))
	ctx := context.Background()

	if got := len(cl.Nodes()); got != 6 {
		t.Fatalf("Nodes() = %d nodes, want 6", got)
	}
	ms := cl.Masters()
	if diff := cmp.Diff(cl.Addrs()[:3], addrsOf(ms)); diff != "" {
		t.Fatalf("Masters() are not the first three nodes (-want +got):\n%s", diff)
	}
	// The short reload interval lets the client find a promoted replica
	// quickly: go-redis reloads the slot map on MOVED, but not when the old
	// master refuses connections.
	c := cl.Client(func(o *redis.ClusterOptions) { o.ClusterStateReloadInterval = 250 * time.Millisecond })

	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatalf("CLUSTER SLOTS: %v", err)
	}
	covered := 0
	for _, s := range slots {
		covered += s.End - s.Start + 1
	}
	if covered != ClusterSlots {
		t.Errorf("CLUSTER SLOTS covers %d slots, want %d", covered, ClusterSlots)
	}
	// CLUSTER SLOTS omits replicas of a master that has not been written
	// to yet, so ask for each master's replicas instead.
	for i, m := range ms {
		replicas, err := m.Client().ClusterSlaves(ctx, cl.NodeID(m)).Result()
		if err != nil || len(replicas) != 1 {
			t.Fatalf("CLUSTER REPLICAS of master %d = %q, %v; want one", i, replicas, err)
		}
		if want := cl.NodeID(cl.Nodes()[3+i]); !strings.HasPrefix(replicas[0], want+" ") {
			t.Errorf("replica of master %d = %q, want node %s", i, replicas[0], want)
		}
	}

	owner := map[string]*Server{}
	for i, m := range ms {
		for _, tag := range cl.KeysOn(m, "user", 4) {
			key := "rl:fw:{" + tag + "}"
			owner[tag] = m
			if got := cl.MasterFor(key); got != m {
				t.Fatalf("MasterFor(%q) = %s, want %s", key, got.Addr(), m.Addr())
			}
			if got, err := c.ClusterKeySlot(ctx, key).Result(); err != nil || int(got) != KeySlot(key) {
				t.Fatalf("CLUSTER KEYSLOT %q = %d, %v; KeySlot = %d", key, got, err, KeySlot(key))
			}
			if err := c.Set(ctx, key, i, 0).Err(); err != nil {
				t.Fatalf("cluster SET %q: %v", key, err)
			}
			// A direct GET on the master proves the key lives there: any
			// other node would answer MOVED.
			if got, err := m.Client().Get(ctx, key).Int(); err != nil || got != i {
				t.Fatalf("GET %q on master %d = %d, %v; want %d", key, i, got, err, i)
			}
		}
	}
	if len(owner) != 12 {
		t.Fatalf("KeysOn gave %d distinct tags, want 12", len(owner))
	}

	victim := ms[0]
	key := "rl:fw:{" + cl.KeysOn(victim, "victim", 1)[0] + "}"
	if err := c.Set(ctx, key, "before", 0).Err(); err != nil {
		t.Fatalf("SET %q: %v", key, err)
	}
	if n, err := victim.Client().Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v; want 1", n, err)
	}
	killed := time.Now()
	if got := cl.KillMaster(0); got != victim {
		t.Fatalf("KillMaster(0) = %s, want %s", got.Addr(), victim.Addr())
	}
	// Probe the client while the cluster fails over.
	var fails atomic.Int64
	recovered := make(chan time.Duration, 1)
	go func() {
		for time.Since(killed) < 20*time.Second {
			cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			v, err := c.Get(cctx, key).Result()
			cancel()
			if err == nil && v == "before" {
				recovered <- time.Since(killed)
				return
			}
			fails.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
		close(recovered)
	}()
	cl.WaitFailover(20 * time.Second)
	t.Logf("replica promoted %v after the master was killed", time.Since(killed))
	gap, ok := <-recovered
	if !ok {
		t.Fatalf("the cluster client did not read %q back within 20 s of the kill", key)
	}
	t.Logf("cluster client read the key again %v after the kill, %d reads failed", gap, fails.Load())

	if got := cl.MasterFor(key); got != cl.Nodes()[3] {
		t.Fatalf("after failover MasterFor = %s, want the replica %s", got.Addr(), cl.Nodes()[3].Addr())
	}
	if diff := cmp.Diff([]string{cl.Nodes()[3].Addr(), ms[1].Addr(), ms[2].Addr()}, addrsOf(cl.Masters())); diff != "" {
		t.Errorf("Masters() after failover (-want +got):\n%s", diff)
	}
	restarted := time.Now()
	victim.Restart()
	cl.WaitFailover(20 * time.Second)
	err = waitFor(ctx, func() error { return victim.replicaSynced(ctx) })
	if err != nil {
		t.Fatalf("restarted master did not rejoin as a replica: %v", err)
	}
	t.Logf("killed master rejoined as a replica %v after Restart", time.Since(restarted))
	if got := cl.MasterFor(key); got != cl.Nodes()[3] {
		t.Errorf("after the old master rejoined, MasterFor = %s, want %s", got.Addr(), cl.Nodes()[3].Addr())
	}
	for tag, m := range owner {
		key := "rl:fw:{" + tag + "}"
		if m == victim {
			continue
		}
		if err := c.Incr(ctx, key).Err(); err != nil {
			t.Errorf("INCR %q on an untouched master: %v", key, err)
		}
	}
}

func TestClusterWithoutReplicas(t *testing.T) {
	t.Parallel()
	cl := StartCluster(t, 3, 0)
	if got, want := addrsOf(cl.Masters()), cl.Addrs(); !cmp.Equal(got, want) {
		t.Fatalf("Masters() = %v, want every node %v", got, want)
	}
	ctx := context.Background()
	c := cl.Client()
	for _, m := range cl.Masters() {
		k := cl.KeysOn(m, "k", 1)[0]
		if err := c.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatalf("SET %q: %v", k, err)
		}
		if n := KeyCount(t, m.Client()); n != 1 {
			t.Errorf("master %s holds %d keys, want 1", m.Addr(), n)
		}
	}
}

func TestRing(t *testing.T) {
	t.Parallel()
	r, servers := StartRing(t, 3)
	if len(servers) != 3 {
		t.Fatalf("StartRing gave %d servers, want 3", len(servers))
	}
	ctx := context.Background()
	for i := 0; i < 60; i++ {
		if err := r.Set(ctx, fmt.Sprintf("k%d", i), i, 0).Err(); err != nil {
			t.Fatalf("ring SET: %v", err)
		}
	}
	total := int64(0)
	for i, s := range servers {
		n := KeyCount(t, s.Client())
		if n == 0 {
			t.Errorf("shard %d holds no key of 60", i)
		}
		total += n
	}
	if total != 60 {
		t.Errorf("shards hold %d keys, want 60", total)
	}
	if v, err := r.Get(ctx, "k7").Int(); err != nil || v != 7 {
		t.Errorf("ring GET k7 = %d, %v; want 7", v, err)
	}
}
