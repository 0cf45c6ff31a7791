package harness

import (
	"context"
	"net"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Counter is a go-redis hook that counts round trips (one per command, one
// per pipeline or transaction) and, by name, the commands a client sends at
// the top level: inside MULTI/EXEC only MULTI and EXEC count, because Redis
// runs the queued commands within EXEC's time. The commands go-redis sends
// to set up a connection (HELLO, CLIENT, AUTH, SELECT) are not counted. The
// zero value is ready to use; it is safe for concurrent use.
type Counter struct {
	trips atomic.Int64

	mu    sync.Mutex
	names map[string]int64 // guarded by mu
}

// Trips returns the number of round trips counted since the last Reset.
func (c *Counter) Trips() int64 { return c.trips.Load() }

// Names returns a copy of the top-level command counts (lower-case names)
// since the last Reset.
func (c *Counter) Names() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.names))
	for k, v := range c.names {
		out[k] = v
	}
	return out
}

// Reset sets every count to zero.
func (c *Counter) Reset() {
	c.mu.Lock()
	c.trips.Store(0)
	clear(c.names)
	c.mu.Unlock()
}

func (c *Counter) add(name string) {
	c.mu.Lock()
	if c.names == nil {
		c.names = make(map[string]int64)
	}
	c.names[name]++
	c.mu.Unlock()
}

// setup reports whether name is a command go-redis sends when it opens a
// connection.
func setup(name string) bool {
	switch name {
	case "hello", "client", "auth", "select":
		return true
	}
	return false
}

// Count counts one command named name (lower case) as a round trip of
// its own, unless it is one that sets up a connection. It is for clients
// that take no go-redis hook; a client that pipelines commands by itself
// (without a pipeline a hook could see) has fewer round trips than its
// commands, and Count cannot tell.
func (c *Counter) Count(name string) {
	if !setup(name) {
		c.trips.Add(1)
		c.add(name)
	}
}

// DialHook implements redis.Hook; it counts nothing.
func (c *Counter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

// ProcessHook implements redis.Hook.
func (c *Counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); !setup(name) {
			c.trips.Add(1)
			c.add(name)
		}
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (c *Counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		counted := false
		inTx := false
		for _, cmd := range cmds {
			name := cmd.Name()
			switch {
			case setup(name):
				continue
			case name == "multi":
				inTx = true
			case name == "exec":
				inTx = false
			case inTx:
				continue
			}
			c.add(name)
			counted = true
		}
		if counted {
			c.trips.Add(1)
		}
		return next(ctx, cmds)
	}
}
