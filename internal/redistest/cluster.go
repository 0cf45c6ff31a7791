package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterSlots is the number of hash slots of a Redis Cluster.
const ClusterSlots = 16384

// ClusterNodeTimeout is the cluster-node-timeout [StartCluster] gives every
// node: a master that does not answer for this long is flagged as failing,
// and one of its replicas takes over about a second later. It can be
// changed per cluster with the extra arguments of StartCluster.
const ClusterNodeTimeout = time.Second

// clusterStartTimeout bounds how long StartCluster waits for the nodes to
// join, take their slots and sync their replicas.
const clusterStartTimeout = 30 * time.Second

// Cluster is a Redis Cluster of real redis-server processes on loopback,
// owned by a test. Its methods are safe for concurrent use, but those that
// query the nodes (Masters, MasterFor, KeysOn, KillMaster, WaitFailover)
// fail the test on error or timeout, so they belong on the test's
// goroutine.
type Cluster struct {
	tb       testing.TB
	nodes    []*Server // initial masters first, then their replicas
	ids      []string  // cluster node IDs, indexed like nodes
	masters  int
	replicas int // per master
}

// StartCluster starts a Redis Cluster of masters masters, each with
// replicasPerMaster replicas, every node a redis-server with
// --cluster-enabled on a free 127.0.0.1 port in its own tb.TempDir(). The
// masters share the 16384 slots in equal contiguous ranges, master i
// taking the i-th range. StartCluster returns once every node reports
// cluster_state:ok, agrees on the roles of all nodes, and every replica has
// finished its first sync; the nodes are stopped when the test ends. Extra
// arguments are passed to every node (for example "--cluster-node-timeout",
// "500"); they override the defaults.
//
// A replica can replace a failed master only when a majority of masters
// survives, so failover tests need at least three masters.
//
// Like [Start], StartCluster skips or fails tb when redis-server is missing.
func StartCluster(tb testing.TB, masters, replicasPerMaster int, extra ...string) *Cluster {
	tb.Helper()
	if masters < 1 || masters > ClusterSlots || replicasPerMaster < 0 {
		tb.Fatalf("redistest: StartCluster(%d masters, %d replicas each): bad size", masters, replicasPerMaster)
	}
	bin := NeedServer(tb)
	args := append([]string{
		"--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout / time.Millisecond)),
		// A replica that lost its master long ago may still take over.
		"--cluster-replica-validity-factor", "0",
		// Full syncs start at once instead of waiting 5 s for more replicas.
		"--repl-diskless-sync-delay", "0",
	}, extra...)
	n := masters * (1 + replicasPerMaster)
	nodes, err := startServers(tb, bin, n, nil, func(int) []string { return args }, freeClusterPort)
	if err != nil {
		tb.Fatalf("redistest: start cluster: %v", err)
	}
	c := &Cluster{tb: tb, nodes: nodes, masters: masters, replicas: replicasPerMaster}
	ctx, cancel := context.WithTimeout(context.Background(), clusterStartTimeout)
	defer cancel()
	if err := c.join(ctx); err != nil {
		tb.Fatalf("redistest: start cluster: %v\n%s", err, c.dump())
	}
	return c
}

// join gives the fresh nodes their slots and roles and waits for the
// cluster to settle.
func (c *Cluster) join(ctx context.Context) error {
	c.ids = make([]string, len(c.nodes))
	for i, s := range c.nodes {
		id, err := s.control().ClusterMyID(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER MYID: %w", s.Addr(), err)
		}
		c.ids[i] = id
		// Distinct epochs spare the nodes the collision handling that
		// would otherwise give each its own epoch, one round at a time.
		if err := s.control().Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER SET-CONFIG-EPOCH: %w", s.Addr(), err)
		}
	}
	for m := 0; m < c.masters; m++ {
		lo, hi := m*ClusterSlots/c.masters, (m+1)*ClusterSlots/c.masters-1
		if err := c.nodes[m].control().ClusterAddSlotsRange(ctx, lo, hi).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER ADDSLOTS %d-%d: %w", c.nodes[m].Addr(), lo, hi, err)
		}
	}
	for _, s := range c.nodes[1:] {
		if err := c.nodes[0].control().ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(s.Port())).Err(); err != nil {
			return fmt.Errorf("CLUSTER MEET %s: %w", s.Addr(), err)
		}
	}
	// A replica can only follow a master it has heard of.
	err := waitFor(ctx, func() error {
		for i := c.masters; i < len(c.nodes); i++ {
			view, err := c.nodes[i].clusterNodes(ctx)
			if err != nil {
				return err
			}
			if _, ok := view[c.ids[c.masterOf(i)]]; !ok {
				return fmt.Errorf("%s does not know its master yet", c.nodes[i].Addr())
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := c.masters; i < len(c.nodes); i++ {
		if err := c.nodes[i].control().ClusterReplicate(ctx, c.ids[c.masterOf(i)]).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER REPLICATE: %w", c.nodes[i].Addr(), err)
		}
	}
	return waitFor(ctx, func() error { return c.settled(ctx) })
}

// masterOf returns the index of the initial master of node i, a replica.
func (c *Cluster) masterOf(i int) int { return (i - c.masters) / c.replicas }

// settled reports why the fresh cluster is not ready yet, or nil.
func (c *Cluster) settled(ctx context.Context) error {
	for i, s := range c.nodes {
		if err := s.clusterOK(ctx); err != nil {
			return err
		}
		view, err := s.clusterNodes(ctx)
		if err != nil {
			return err
		}
		if len(view) != len(c.nodes) {
			return fmt.Errorf("%s knows %d nodes, want %d", s.Addr(), len(view), len(c.nodes))
		}
		for j, id := range c.ids {
			n, ok := view[id]
			if !ok {
				return fmt.Errorf("%s does not know %s", s.Addr(), c.nodes[j].Addr())
			}
			if !n.connected && !n.has("myself") {
				return fmt.Errorf("%s is not connected to %s", s.Addr(), c.nodes[j].Addr())
			}
			if j >= c.masters && n.master != c.ids[c.masterOf(j)] {
				return fmt.Errorf("%s does not see %s as a replica yet", s.Addr(), c.nodes[j].Addr())
			}
		}
		if i >= c.masters {
			if err := s.replicaSynced(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// Nodes returns every node in start order: the initial masters, then the
// replicas of master 0, of master 1, and so on. Roles change on failover;
// [Cluster.Masters] gives the current ones.
func (c *Cluster) Nodes() []*Server { return append([]*Server(nil), c.nodes...) }

// Addrs returns the addresses of all nodes, in the order of [Cluster.Nodes].
// Any of them is a valid seed for a cluster client.
func (c *Cluster) Addrs() []string { return addrsOf(c.nodes) }

// addrsOf returns the servers' addresses, in order.
func addrsOf(servers []*Server) []string {
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.Addr()
	}
	return addrs
}

// NodeID returns the cluster node ID of s, or "" when s is not a node of c.
func (c *Cluster) NodeID(s *Server) string {
	for i, n := range c.nodes {
		if n == s {
			return c.ids[i]
		}
	}
	return ""
}

// Client returns a new cluster client seeded with every node, closed when
// the test ends. Each opt may adjust the options first.
//
// go-redis reloads its slot map when a node answers MOVED, or when the map
// is older than ClusterStateReloadInterval (60 s by default) at the next
// command; not when a killed master refuses connections. A client with the
// default options therefore keeps failing commands for the killed master's
// slots for up to a minute after a replica took over. Tests of failover set
// a short ClusterStateReloadInterval, or call ReloadState on errors.
func (c *Cluster) Client(opts ...func(*redis.ClusterOptions)) *redis.ClusterClient {
	o := &redis.ClusterOptions{Addrs: c.Addrs()}
	for _, f := range opts {
		f(o)
	}
	cc := redis.NewClusterClient(o)
	c.tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Masters returns the nodes that serve slots, in the order of their lowest
// slot, as the first running node sees the cluster now. Right after
// StartCluster that is the initial masters in start order. After a master
// stops, it is still listed until a replica takes over its slots (see
// [Cluster.WaitFailover]).
func (c *Cluster) Masters() []*Server {
	c.tb.Helper()
	owners := c.slotOwners()
	var ms []*Server
	seen := map[*Server]bool{}
	for _, s := range owners {
		if s != nil && !seen[s] {
			seen[s] = true
			ms = append(ms, s)
		}
	}
	return ms
}

// MasterFor returns the master that serves key's slot, as the first running
// node sees the cluster now.
func (c *Cluster) MasterFor(key string) *Server {
	c.tb.Helper()
	return c.slotOwners()[KeySlot(key)]
}

// KeysOn returns n distinct keys whose slots master m serves, made of
// prefix and a number. When prefix has no braces, each key hashes to the
// same slot whether used whole or as a hash tag inside "{…}".
func (c *Cluster) KeysOn(m *Server, prefix string, n int) []string {
	c.tb.Helper()
	owners := c.slotOwners()
	var keys []string
	for i := 0; len(keys) < n; i++ {
		if i > 1000*(n+1)*len(c.nodes) {
			c.tb.Fatalf("redistest: %s serves no slot", m.Addr())
		}
		k := prefix + strconv.Itoa(i)
		if owners[KeySlot(k)] == m {
			keys = append(keys, k)
		}
	}
	return keys
}

// KillMaster kills the i-th of [Cluster.Masters] without waiting for a
// failover, and returns it. Its data is lost; a [Server.Restart] brings it
// back with its old node ID, and it rejoins the cluster as a replica.
func (c *Cluster) KillMaster(i int) *Server {
	c.tb.Helper()
	ms := c.Masters()
	if i < 0 || i >= len(ms) {
		c.tb.Fatalf("redistest: KillMaster(%d) of %d masters", i, len(ms))
	}
	ms[i].Stop()
	return ms[i]
}

// WaitFailover waits until every running node reports cluster_state:ok and
// sees all slots served by running masters, that is, until replicas have
// taken over from every stopped master and restarted nodes have rejoined.
// It fails the test after timeout. With the default [ClusterNodeTimeout],
// a failover takes about two to three seconds from the kill.
func (c *Cluster) WaitFailover(timeout time.Duration) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := waitFor(ctx, func() error { return c.healthy(ctx) }); err != nil {
		c.tb.Fatalf("redistest: cluster failover not done after %v: %v\n%s", timeout, err, c.dump())
	}
}

// healthy reports why the cluster is not serving every slot from a
// running master as seen by every running node, or nil.
func (c *Cluster) healthy(ctx context.Context) error {
	byID := c.byID()
	for _, s := range c.nodes {
		if !s.running() {
			continue
		}
		if err := s.clusterOK(ctx); err != nil {
			return err
		}
		view, err := s.clusterNodes(ctx)
		if err != nil {
			return err
		}
		covered := 0
		for id, n := range view {
			if len(n.slots) == 0 {
				continue
			}
			owner := byID[id]
			if owner == nil || !owner.running() {
				return fmt.Errorf("%s sees slots served by stopped node %s", s.Addr(), n.addr)
			}
			if n.has("fail") || n.has("fail?") {
				return fmt.Errorf("%s sees slot owner %s as failing", s.Addr(), n.addr)
			}
			for _, r := range n.slots {
				covered += r[1] - r[0] + 1
			}
		}
		if covered != ClusterSlots {
			return fmt.Errorf("%s sees %d slots served", s.Addr(), covered)
		}
	}
	return nil
}

// slotOwners maps every slot to its master as the first running node sees
// it; a slot no known node serves maps to nil.
func (c *Cluster) slotOwners() []*Server {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range c.nodes {
		if !s.running() {
			continue
		}
		view, err := s.clusterNodes(ctx)
		if err != nil {
			c.tb.Fatalf("redistest: %v", err)
		}
		byID := c.byID()
		owners := make([]*Server, ClusterSlots)
		for id, n := range view {
			for _, r := range n.slots {
				for slot := r[0]; slot <= r[1]; slot++ {
					owners[slot] = byID[id]
				}
			}
		}
		return owners
	}
	c.tb.Fatalf("redistest: no cluster node is running")
	return nil
}

func (c *Cluster) byID() map[string]*Server {
	m := make(map[string]*Server, len(c.nodes))
	for i, id := range c.ids {
		m[id] = c.nodes[i]
	}
	return m
}

// dump returns every running node's CLUSTER NODES, for failure messages.
func (c *Cluster) dump() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b strings.Builder
	for _, s := range c.nodes {
		if !s.running() {
			fmt.Fprintf(&b, "%s: stopped\n", s.Addr())
			continue
		}
		out, err := s.control().ClusterNodes(ctx).Result()
		if err != nil {
			out = err.Error()
		}
		fmt.Fprintf(&b, "%s CLUSTER NODES:\n%s\n", s.Addr(), strings.TrimSpace(out))
	}
	return b.String()
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	addr      string   // ip:port
	flags     []string // myself, master, slave, fail?, fail, handshake, noaddr, …
	master    string   // node ID of its master, or "" for a master
	connected bool
	slots     [][2]int // inclusive ranges
}

func (n clusterNode) has(flag string) bool {
	for _, f := range n.flags {
		if f == flag {
			return true
		}
	}
	return false
}

// clusterNodes returns the server's CLUSTER NODES by node ID.
func (s *Server) clusterNodes(ctx context.Context) (map[string]clusterNode, error) {
	out, err := s.control().ClusterNodes(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("%s: CLUSTER NODES: %w", s.Addr(), err)
	}
	view, err := parseClusterNodes(out)
	if err != nil {
		return nil, fmt.Errorf("%s: CLUSTER NODES: %w", s.Addr(), err)
	}
	return view, nil
}

// parseClusterNodes parses the reply of CLUSTER NODES: per node
// "<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv>
// <config-epoch> <link-state> <slot> <slot> …", where a slot is "n", "lo-hi"
// or a migration in brackets, which is ignored.
func parseClusterNodes(out string) (map[string]clusterNode, error) {
	view := map[string]clusterNode{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("short line %q", line)
		}
		n := clusterNode{
			addr:      f[1],
			flags:     strings.Split(f[2], ","),
			connected: f[7] == "connected",
		}
		if i := strings.IndexAny(n.addr, "@,"); i >= 0 {
			n.addr = n.addr[:i]
		}
		if f[3] != "-" {
			n.master = f[3]
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue
			}
			lo, hi, isRange := strings.Cut(r, "-")
			if !isRange {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil || a < 0 || b < a || b >= ClusterSlots {
				return nil, fmt.Errorf("bad slot range %q", r)
			}
			n.slots = append(n.slots, [2]int{a, b})
		}
		sort.Slice(n.slots, func(i, j int) bool { return n.slots[i][0] < n.slots[j][0] })
		view[f[0]] = n
	}
	return view, nil
}

// clusterOK reports whether the server says cluster_state:ok.
func (s *Server) clusterOK(ctx context.Context) error {
	info, err := s.control().ClusterInfo(ctx).Result()
	if err != nil {
		return fmt.Errorf("%s: CLUSTER INFO: %w", s.Addr(), err)
	}
	if st := infoField(info, "cluster_state"); st != "ok" {
		return fmt.Errorf("%s: cluster_state:%s", s.Addr(), st)
	}
	return nil
}

// replicaSynced reports whether the server is a replica whose link to its
// master is up and whose first sync has finished.
func (s *Server) replicaSynced(ctx context.Context) error {
	info, err := s.control().Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("%s: INFO replication: %w", s.Addr(), err)
	}
	if infoField(info, "role") != "slave" || infoField(info, "master_link_status") != "up" ||
		infoField(info, "master_sync_in_progress") != "0" {
		return fmt.Errorf("%s: replica not in sync: role:%s master_link_status:%s", s.Addr(),
			infoField(info, "role"), infoField(info, "master_link_status"))
	}
	return nil
}

// infoField returns the value of name in the reply of INFO or CLUSTER INFO,
// or "" when it is missing.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// KeySlot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of the
// key's hash tag, modulo 16384. The hash tag is the part between the first
// "{" and the next "}" when that part is not empty, else the whole key.
func KeySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % ClusterSlots
}

// startServers starts n servers at once, each in its own tb.TempDir(). The
// arguments of server i are pre(i, dir) (pre may be nil; it may write a
// config file into dir) and extra(i). A server that fails to start stops
// none of the others; they are all stopped when the test ends.
func startServers(tb testing.TB, bin string, n int, pre func(i int, dir string) ([]string, error), extra func(i int) []string, pick func() (int, error)) ([]*Server, error) {
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = tb.TempDir()
	}
	servers := make([]*Server, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var p []string
			if pre != nil {
				if p, errs[i] = pre(i, dirs[i]); errs[i] != nil {
					return
				}
			}
			servers[i], errs[i] = startServer(tb, bin, dirs[i], p, extra(i), pick)
		}()
	}
	wg.Wait()
	return servers, errors.Join(errs...)
}

// freeClusterPort returns a port p on 127.0.0.1 that was free a moment ago
// along with p+10000, the port of its cluster bus.
func freeClusterPort() (int, error) {
	for attempt := 0; attempt < 50; attempt++ {
		p, err := FreePort()
		if err != nil {
			return 0, err
		}
		if p+10000 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		if err != nil {
			continue
		}
		_ = l.Close()
		return p, nil
	}
	return 0, errors.New("no free port p with p+10000 free")
}

// waitFor calls check every 20 ms until it returns nil, and returns nil, or
// until ctx is done, and returns check's last error.
func waitFor(ctx context.Context, check func() error) error {
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}
