package redistest

import (
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
)

// StartRing starts shards redis-servers as [Start] does, at once, and
// returns a ring client over them, closed when the test ends, with the
// servers in shard order. Shard i is named "shard<i>" in the ring's
// options. Each opt may adjust the options first.
func StartRing(tb testing.TB, shards int, opts ...func(*redis.RingOptions)) (*redis.Ring, []*Server) {
	tb.Helper()
	if shards < 1 {
		tb.Fatalf("redistest: StartRing(%d shards): need at least one", shards)
	}
	servers, err := startServers(tb, NeedServer(tb), shards, nil, func(int) []string { return nil }, FreePort)
	if err != nil {
		tb.Fatalf("redistest: start ring: %v", err)
	}
	o := &redis.RingOptions{Addrs: map[string]string{}}
	for i, s := range servers {
		o.Addrs["shard"+strconv.Itoa(i)] = s.Addr()
	}
	for _, f := range opts {
		f(o)
	}
	r := redis.NewRing(o)
	tb.Cleanup(func() { _ = r.Close() })
	return r, servers
}
