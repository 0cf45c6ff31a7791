package redislimit_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
	"github.com/redislimit/redislimit/internal/redistest"
)

// clusterClient returns a client for cl that refreshes its slot map every
// 250 ms: go-redis otherwise keeps routing to a dead master for up to its
// 60 s ClusterStateReloadInterval, as a refused connection carries no
// MOVED redirect.
func clusterClient(cl *redistest.Cluster) *redis.ClusterClient {
	return cl.Client(func(o *redis.ClusterOptions) {
		o.ClusterStateReloadInterval = 250 * time.Millisecond
		o.MaxRetries = -1
		o.DialerRetries = 1
		o.ReadTimeout = 500 * time.Millisecond
		o.WriteTimeout = 500 * time.Millisecond
		o.DialTimeout = 500 * time.Millisecond
	})
}

// On a three-master cluster, keys spread over every shard each keep their
// exact limit under concurrent clients, with no CROSSSLOT or MOVED errors.
func TestClusterLimitsHoldOnEveryShard(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	ctx := context.Background()
	const limit, perShard, workers, tries = 10, 4, 6, 60
	for _, row := range algtest.Rows {
		t.Run(row.Name, func(t *testing.T) {
			alg := row.New(limit, time.Hour)
			var keys []string
			for _, m := range cl.Masters() {
				keys = append(keys, cl.KeysOn(m, testPrefix(t), perShard)...)
			}
			admitted := make([]atomic.Int64, len(keys))
			var errs atomic.Int64
			var wg sync.WaitGroup
			for c := 0; c < 2; c++ { // two app servers
				lim, err := redislimit.New(cl.Client(), alg, redislimit.WithPrefix(testPrefix(t)))
				if err != nil {
					t.Fatal(err)
				}
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func(w int) {
						defer wg.Done()
						for i := 0; i < tries; i++ {
							k := (w + i) % len(keys)
							r, err := lim.Allow(ctx, keys[k])
							if err != nil {
								errs.Add(1)
								t.Errorf("Allow on the cluster: %v", err)
								return
							}
							if r.Allowed {
								admitted[k].Add(1)
							}
						}
					}(w)
				}
			}
			wg.Wait()
			for i, k := range keys {
				if got := admitted[i].Load(); got != limit {
					t.Errorf("key %q (slot %d, on %s): %d admitted, want exactly %d",
						k, redistest.KeySlot(k), cl.MasterFor(k).Addr(), got, limit)
				}
			}
			if errs.Load() != 0 {
				t.Errorf("%d errors", errs.Load())
			}
		})
	}
}

// When a master dies under load, its replica takes over; decisions on its
// keys come back by themselves (the new master has no scripts cached:
// EVALSHA falls back to EVAL), decisions during the gap follow the failure
// policy with every error reported, and no shard admits more than the
// limit.
func TestClusterFailover(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 1)
	ctx := context.Background()
	const limit = 50
	var reported atomic.Int64
	lim, err := redislimit.New(clusterClient(cl), redislimit.SlidingLog(limit, time.Hour),
		redislimit.WithPrefix(testPrefix(t)),
		redislimit.WithFailurePolicy(redislimit.FailClosed),
		redislimit.WithTimeout(time.Second),
		redislimit.WithOnError(func(context.Context, error) { reported.Add(1) }))
	if err != nil {
		t.Fatal(err)
	}
	masters := cl.Masters()
	victim := masters[0]
	victimKeys := cl.KeysOn(victim, testPrefix(t)+"v", 3)
	var otherKeys []string
	for _, m := range masters[1:] {
		otherKeys = append(otherKeys, cl.KeysOn(m, testPrefix(t)+"o", 3)...)
	}
	// Warm every shard so that scripts are cached on the old masters.
	for _, k := range append(append([]string{}, victimKeys...), otherKeys...) {
		if _, err := lim.Allow(ctx, k); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
	}

	var (
		mu          sync.Mutex
		admitted    = map[string]int{}
		failures    int // degraded decisions: denied by the policy
		errs        int
		firstFail   time.Time
		lastFail    time.Time
		recoveredAt time.Time
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	worker := func(keys []string) {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := keys[i%len(keys)]
			r, err := lim.Allow(ctx, k)
			now := time.Now()
			mu.Lock()
			switch {
			case err != nil:
				errs++
			case r.Degraded:
				failures++
				if r.Allowed {
					t.Errorf("FailClosed allowed a call without Redis: %+v", r)
				}
				if firstFail.IsZero() {
					firstFail = now
				}
				lastFail = now
			case r.Allowed:
				admitted[k]++
			}
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}
	for w := 0; w < 4; w++ {
		wg.Add(2)
		go worker(victimKeys)
		go worker(otherKeys)
	}
	time.Sleep(100 * time.Millisecond)
	killedAt := time.Now()
	cl.KillMaster(0)
	cl.WaitFailover(30 * time.Second)
	promotedAt := time.Now()

	// Decisions on the victim's keys must come back by themselves.
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := lim.Peek(ctx, victimKeys[0]); err == nil && !r.Degraded {
			recoveredAt = time.Now()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let the workers run on the new master
	close(stop)
	wg.Wait()
	if recoveredAt.IsZero() {
		t.Fatalf("decisions on the failed shard did not resume within 15 s of the failover")
	}
	for _, k := range victimKeys {
		if r, err := lim.Allow(ctx, k); err != nil || r.Degraded {
			t.Errorf("Allow on the promoted master = %+v, %v; want a decision from Redis", r, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if errs != 0 {
		t.Errorf("%d errors returned under FailClosed, want none", errs)
	}
	if failures == 0 {
		t.Error("no degraded decisions: the failover went unnoticed, so this test proves nothing")
	}
	if got := reported.Load(); got < int64(failures) {
		t.Errorf("OnError saw %d errors for %d degraded decisions", got, failures)
	}
	for _, k := range otherKeys {
		if admitted[k]+1 > limit { // +1 for the warm-up call
			t.Errorf("key %q on an untouched shard: %d admitted, limit %d", k, admitted[k]+1, limit)
		}
	}
	gap := time.Duration(0)
	if !firstFail.IsZero() {
		gap = lastFail.Sub(firstFail)
	}
	t.Logf("failover: master killed → replica promoted in %v; decisions back %v after the kill; %d failed decisions over %v",
		promotedAt.Sub(killedAt).Round(time.Millisecond), recoveredAt.Sub(killedAt).Round(time.Millisecond), failures, gap.Round(time.Millisecond))
}

// A Ring shards keys by the user key's hash tag; limits hold on each shard.
func TestRing(t *testing.T) {
	ring, _ := redistest.StartRing(t, 3)
	ctx := context.Background()
	lim, err := redislimit.New(ring, redislimit.TokenBucket(1, time.Hour, 3), redislimit.WithPrefix(testPrefix(t)))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
		for i := 0; i < 5; i++ {
			r, err := lim.Allow(ctx, k)
			if err != nil {
				t.Fatalf("Allow on a Ring: %v", err)
			}
			if want := i < 3; r.Allowed != want {
				t.Errorf("key %q call %d: Allowed = %v, want %v", k, i, r.Allowed, want)
			}
		}
	}
}

// A Sentinel failover client keeps deciding across a failover.
func TestSentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t, 1)
	ctx := context.Background()
	c := s.Client(func(o *redis.FailoverOptions) {
		o.MaxRetries = -1
		o.DialerRetries = 1
	})
	lim, err := redislimit.New(c, redislimit.FixedWindow(3, time.Hour), redislimit.WithPrefix(testPrefix(t)))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if r, err := lim.Allow(ctx, "k"); err != nil || !r.Allowed {
			t.Fatalf("Allow before failover = %+v, %v", r, err)
		}
	}
	s.Failover(30 * time.Second)
	deadline := time.Now().Add(15 * time.Second)
	var r redislimit.Result
	for {
		r, err = lim.Allow(ctx, "k")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Allow after failover: %v", err)
	}
	// Replication is asynchronous, but here the writes were long synced:
	// the promoted replica holds the count.
	if !r.Allowed || r.Remaining != 0 {
		t.Errorf("third call after failover = %+v, want allowed with 0 remaining (state kept by the replica)", r)
	}
}
