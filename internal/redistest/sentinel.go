package redistest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMasterName is the name under which the sentinels of
// [StartSentinel] monitor their master.
const SentinelMasterName = "redistest"

// SentinelDownAfter is the down-after-milliseconds of the sentinels of
// [StartSentinel]: a master that does not answer for this long is
// subjectively down, and an automatic failover follows.
const SentinelDownAfter = time.Second

// sentinelStartTimeout bounds how long StartSentinel waits for the replica
// to sync and the sentinels to know it and each other.
const sentinelStartTimeout = 20 * time.Second

// Sentinel is a master and a replica watched by Redis Sentinel, all real
// redis-server processes on loopback owned by a test. Its methods are safe
// for concurrent use, but those that query the nodes (Master, Failover,
// WaitFailover) fail the test on error or timeout, so they belong on the
// test's goroutine.
type Sentinel struct {
	tb        testing.TB
	data      []*Server // [0] starts as the master, [1] as its replica
	sentinels []*Server
	sc        []*redis.SentinelClient // control clients, indexed like sentinels
}

// StartSentinel starts a master, one replica of it, and sentinels
// redis-server processes in sentinel mode (redis-server <config> --sentinel,
// so no redis-sentinel binary is needed) that monitor the master as
// [SentinelMasterName], with a quorum of a majority of the sentinels. Each
// has a free 127.0.0.1 port and its own tb.TempDir(). StartSentinel returns
// once the replica has synced and every sentinel knows the replica and the
// other sentinels; with more than one sentinel that takes a few seconds, as
// sentinels find each other by messages sent every 2 s. Extra arguments go
// to the master and the replica. Everything is stopped when the test ends.
//
// Like [Start], StartSentinel skips or fails tb when redis-server is
// missing.
func StartSentinel(tb testing.TB, sentinels int, extra ...string) *Sentinel {
	tb.Helper()
	if sentinels < 1 {
		tb.Fatalf("redistest: StartSentinel(%d sentinels): need at least one", sentinels)
	}
	bin := NeedServer(tb)
	args := append([]string{"--repl-diskless-sync-delay", "0"}, extra...)
	data, err := startServers(tb, bin, 2, nil, func(int) []string { return args }, FreePort)
	if err != nil {
		tb.Fatalf("redistest: start sentinel data nodes: %v", err)
	}
	s := &Sentinel{tb: tb, data: data}
	ctx, cancel := context.WithTimeout(context.Background(), sentinelStartTimeout)
	defer cancel()
	// REPLICAOF connects at once, where --replicaof waits for the
	// once-a-second replication timer.
	if err := data[1].control().ReplicaOf(ctx, "127.0.0.1", strconv.Itoa(data[0].Port())).Err(); err != nil {
		tb.Fatalf("redistest: REPLICAOF: %v", err)
	}
	if err := waitFor(ctx, func() error { return data[1].replicaSynced(ctx) }); err != nil {
		tb.Fatalf("redistest: start sentinel: %v", err)
	}
	conf := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d %[3]d\n"+
		"sentinel down-after-milliseconds %[1]s %[4]d\n"+
		"sentinel failover-timeout %[1]s 10000\n",
		SentinelMasterName, data[0].Port(), sentinels/2+1, SentinelDownAfter/time.Millisecond)
	writeConf := func(_ int, dir string) ([]string, error) {
		// A sentinel rewrites its config file, so each needs its own.
		p := filepath.Join(dir, "sentinel.conf")
		return []string{p, "--sentinel"}, os.WriteFile(p, []byte(conf), 0o600)
	}
	s.sentinels, err = startServers(tb, bin, sentinels, writeConf, func(int) []string { return nil }, FreePort)
	if err != nil {
		tb.Fatalf("redistest: start sentinels: %v", err)
	}
	for _, sn := range s.sentinels {
		c := redis.NewSentinelClient(sn.control().Options())
		tb.Cleanup(func() { _ = c.Close() })
		s.sc = append(s.sc, c)
	}
	if err := waitFor(ctx, func() error { return s.ready(ctx) }); err != nil {
		tb.Fatalf("redistest: start sentinel: %v\n%s", err, s.dump())
	}
	return s
}

// ready reports why some sentinel cannot fail over yet, or nil.
func (s *Sentinel) ready(ctx context.Context) error {
	for i, sn := range s.sentinels {
		c := s.sc[i]
		replicas, err := c.Replicas(ctx, SentinelMasterName).Result()
		if err != nil {
			return fmt.Errorf("sentinel %s: SENTINEL REPLICAS: %w", sn.Addr(), err)
		}
		ok := false
		for _, r := range replicas {
			if r["name"] == s.data[1].Addr() && r["flags"] == "slave" && r["master-link-status"] == "ok" {
				ok = true
			}
		}
		if !ok {
			return fmt.Errorf("sentinel %s does not know the replica yet: %v", sn.Addr(), replicas)
		}
		peers, err := c.Sentinels(ctx, SentinelMasterName).Result()
		if err != nil {
			return fmt.Errorf("sentinel %s: SENTINEL SENTINELS: %w", sn.Addr(), err)
		}
		if len(peers) != len(s.sentinels)-1 {
			return fmt.Errorf("sentinel %s knows %d other sentinels, want %d", sn.Addr(), len(peers), len(s.sentinels)-1)
		}
	}
	return nil
}

// MasterName returns the name the sentinels know the master by,
// [SentinelMasterName].
func (s *Sentinel) MasterName() string { return SentinelMasterName }

// SentinelAddrs returns the sentinels' addresses.
func (s *Sentinel) SentinelAddrs() []string { return addrsOf(s.sentinels) }

// Sentinels returns the sentinel processes.
func (s *Sentinel) Sentinels() []*Server { return append([]*Server(nil), s.sentinels...) }

// Servers returns the data nodes: the initial master, then the initial
// replica.
func (s *Sentinel) Servers() []*Server { return append([]*Server(nil), s.data...) }

// Client returns a new failover client (see [redis.NewFailoverClient]) for
// the master, closed when the test ends. Each opt may adjust the options
// first.
func (s *Sentinel) Client(opts ...func(*redis.FailoverOptions)) *redis.Client {
	o := &redis.FailoverOptions{MasterName: SentinelMasterName, SentinelAddrs: s.SentinelAddrs()}
	for _, f := range opts {
		f(o)
	}
	c := redis.NewFailoverClient(o)
	s.tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Master returns the data node the first running sentinel names as the
// master.
func (s *Sentinel) Master() *Server {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, sn := range s.sentinels {
		if !sn.running() {
			continue
		}
		m, err := s.masterOf(ctx, i)
		if err != nil {
			s.tb.Fatalf("redistest: %v", err)
		}
		return m
	}
	s.tb.Fatalf("redistest: no sentinel is running")
	return nil
}

// masterOf returns the data node sentinel i names as the master.
func (s *Sentinel) masterOf(ctx context.Context, i int) (*Server, error) {
	sn := s.sentinels[i]
	hp, err := s.sc[i].GetMasterAddrByName(ctx, SentinelMasterName).Result()
	if err != nil {
		return nil, fmt.Errorf("sentinel %s: GET-MASTER-ADDR-BY-NAME: %w", sn.Addr(), err)
	}
	if len(hp) != 2 {
		return nil, fmt.Errorf("sentinel %s: GET-MASTER-ADDR-BY-NAME: reply %q", sn.Addr(), hp)
	}
	addr := hp[0] + ":" + hp[1]
	for _, d := range s.data {
		if d.Addr() == addr {
			return d, nil
		}
	}
	return nil, fmt.Errorf("sentinel %s names unknown master %s", sn.Addr(), addr)
}

// Failover asks the first sentinel to fail over (SENTINEL FAILOVER) and
// waits as [Sentinel.WaitFailover] does, returning the new master. The
// old master keeps running, still a master, until a sentinel turns it
// into a replica of the new one, about 10 s later; the failover client
// stops using it as soon as it hears of the switch. Until then a second
// Failover has no replica to promote and fails the test.
func (s *Sentinel) Failover(timeout time.Duration) *Server {
	s.tb.Helper()
	old := s.Master()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.sc[0].Failover(ctx, SentinelMasterName).Err(); err != nil {
		s.tb.Fatalf("redistest: SENTINEL FAILOVER: %v", err)
	}
	return s.waitFailover(ctx, old, timeout)
}

// WaitFailover waits until every running sentinel names a master other
// than from, and that node reports role:master, then returns it. It fails
// the test after timeout. Stopping the master (from = [Sentinel.Master],
// then [Server.Stop]) starts an automatic failover after
// [SentinelDownAfter] plus up to a second.
func (s *Sentinel) WaitFailover(from *Server, timeout time.Duration) *Server {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.waitFailover(ctx, from, timeout)
}

func (s *Sentinel) waitFailover(ctx context.Context, from *Server, timeout time.Duration) *Server {
	s.tb.Helper()
	var promoted *Server
	err := waitFor(ctx, func() error {
		promoted = nil
		for i, sn := range s.sentinels {
			if !sn.running() {
				continue
			}
			m, err := s.masterOf(ctx, i)
			if err != nil {
				return err
			}
			if m == from {
				return fmt.Errorf("sentinel %s still names %s", sn.Addr(), from.Addr())
			}
			if promoted != nil && m != promoted {
				return fmt.Errorf("sentinels disagree: %s and %s", promoted.Addr(), m.Addr())
			}
			promoted = m
		}
		if promoted == nil {
			return fmt.Errorf("no sentinel is running")
		}
		info, err := promoted.control().Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("%s: INFO replication: %w", promoted.Addr(), err)
		}
		if role := infoField(info, "role"); role != "master" {
			return fmt.Errorf("%s: role:%s", promoted.Addr(), role)
		}
		return nil
	})
	if err != nil {
		s.tb.Fatalf("redistest: sentinel failover not done after %v: %v\n%s", timeout, err, s.dump())
	}
	return promoted
}

// dump returns every running sentinel's view of the master, for failure
// messages.
func (s *Sentinel) dump() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b strings.Builder
	for i, sn := range s.sentinels {
		if !sn.running() {
			fmt.Fprintf(&b, "sentinel %s: stopped\n", sn.Addr())
			continue
		}
		m, err := s.sc[i].Master(ctx, SentinelMasterName).Result()
		fmt.Fprintf(&b, "sentinel %s: ip=%s port=%s flags=%s failover-state=%s %v\n",
			sn.Addr(), m["ip"], m["port"], m["flags"], m["failover-state"], err)
	}
	return b.String()
}
