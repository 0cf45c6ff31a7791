package peers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/redis/rueidis/rueidislimiter"

	"github.com/redislimit/redislimit/bench/internal/harness"
)

// countingClient is a rueidis client that counts each command it sends
// through Do in ctr (rueidis takes no go-redis hook).
type countingClient struct {
	rueidis.Client
	ctr *harness.Counter
}

// Do implements rueidis.Client.
func (c countingClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c.ctr.Count(commandName(cmd.Commands()[0]))
	return c.Client.Do(ctx, cmd)
}

// commandName returns the lower-case name of a command rueidis writes in
// upper case, without allocating for the script calls.
func commandName(s string) string {
	switch s {
	case "EVALSHA":
		return "evalsha"
	case "EVAL":
		return "eval"
	}
	return strings.ToLower(s)
}

// rueidisOption is the configuration of every rueidis client here:
// rueidis's defaults (auto-pipelining on), with client-side caching off,
// since no subject reads through the cache.
func rueidisOption(addr string) rueidis.ClientOption {
	return rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true}
}

// dialRueidis returns a rueidis client to addr that counts in ctr,
// closed when tb ends.
func dialRueidis(tb testing.TB, addr string, ctr *harness.Counter) (rueidis.Client, error) {
	c, err := rueidis.NewClient(rueidisOption(addr))
	if err != nil {
		return nil, fmt.Errorf("rueidis: %w", err)
	}
	tb.Cleanup(c.Close)
	return countingClient{Client: c, ctr: ctr}, nil
}

// rueidisLimiter binds rueidislimiter, limit calls per window, to a
// client of its own to addr. rueidislimiter has no Close: the client is
// built through ClientBuilder so that tb's cleanup can close it.
func rueidisLimiter(tb testing.TB, addr string, ctr *harness.Counter, limit int, window time.Duration) (harness.Decide, error) {
	l, err := rueidislimiter.NewRateLimiter(rueidislimiter.RateLimiterOption{
		ClientOption: rueidisOption(addr),
		ClientBuilder: func(o rueidis.ClientOption) (rueidis.Client, error) {
			return dialRueidis(tb, addr, ctr)
		},
		Limit:  limit,
		Window: window,
	})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, key string) (bool, error) {
		r, err := l.Allow(ctx, key)
		return r.Allowed, err
	}, nil
}

// openRueidisLimit is the limit per hour of rueidislimiter where it must
// never deny: more than any run can make on one key.
const openRueidisLimit = 1 << 40

// rueidisLimiterOpen is rueidislimiter's subject for BenchmarkThroughput:
// every call allowed.
func rueidisLimiterOpen() harness.Subject {
	return harness.Subject{
		Allowed: true,
		Dial: func(tb testing.TB, addr string, ctr *harness.Counter) (harness.Decide, error) {
			return rueidisLimiter(tb, addr, ctr, openRueidisLimit, time.Hour)
		},
	}
}

// rueidisScript is redislimit's token bucket run through rueidis: the
// script, key and ARGV that a redislimit Limiter on harness.OpenBucket
// sends, by rueidis's Lua.Exec (EVALSHA, then EVAL on NOSCRIPT), on a
// rueidis client of its own. Every call must be allowed with tokens left.
func rueidisScript() harness.Subject {
	return harness.Subject{
		Allowed: true,
		Dial: func(tb testing.TB, addr string, ctr *harness.Counter) (harness.Decide, error) {
			call, err := harness.OpenBucketCall()
			if err != nil {
				return nil, err
			}
			c, err := dialRueidis(tb, addr, ctr)
			if err != nil {
				return nil, err
			}
			script := rueidis.NewLuaScript(call.Script)
			return func(ctx context.Context, key string) (bool, error) {
				reply, err := script.Exec(ctx, c, []string{call.Key(key)}, call.Args).AsIntSlice()
				if err != nil {
					return false, err
				}
				// The reply: allowed (1 or 0), remaining, and two more.
				if len(reply) != 4 {
					return false, fmt.Errorf("token bucket: reply %v, want 4 integers", reply)
				}
				return reply[0] == 1 && reply[1] > 0, nil
			}, nil
		},
	}
}
