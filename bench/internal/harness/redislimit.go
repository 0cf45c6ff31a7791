package harness

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/algtest"
)

// Algorithm is one of redislimit's algorithms as benchmarked, or an
// [redislimit.All] of some of them: a configuration whose limit is never
// reached by a benchmark (Open) and one that a few calls exhaust (Tight).
type Algorithm struct {
	// Name is the benchmark name, e.g. "fixed-window" or "All(TB,FW)".
	Name string
	// Short is the algorithm's name, as its Name method returns it: in the
	// Redis key of a single algorithm, e.g. "fw"; "all" for an All.
	Short string
	// Open is never exhausted within an hour of benchmarking.
	Open redislimit.Algorithm
	// Tight admits TightLimit calls per hour.
	Tight redislimit.Algorithm
	// Exact reports whether Remaining after n calls on a fresh key of Open
	// is exactly Open's limit minus n (not so for a bucket that refills).
	Exact bool
	// Parts, for an All, are the rows of its parts, in order; nil for a
	// single algorithm.
	Parts []Algorithm
}

// TightLimit is the capacity of [Algorithm.Tight].
const TightLimit = algtest.TightLimit

// Algorithms returns redislimit's algorithms, one per row of the table
// that the package's tests read (internal/algtest), in its order, then
// All of three of them.
func Algorithms() []Algorithm {
	var as []Algorithm
	for _, row := range algtest.Rows {
		as = append(as, fromRow(row))
	}
	// A third part shows how All's cost grows with its parts.
	tb, fw, sl := fromRow(algtest.TokenBucket), fromRow(algtest.FixedWindow), fromRow(algtest.SlidingLog)
	return append(as, all(tb, fw, sl))
}

// fromRow returns the benchmark row of a row of the table: its Large
// configuration as Open, its Tight as Tight, named as the constructor is
// in lower case, words joined by '-' ("token-bucket"), or for an All, as
// [all] names one ("All(TB,FW)").
func fromRow(row algtest.Row) Algorithm {
	var name strings.Builder
	for i, r := range row.Name {
		if unicode.IsUpper(r) {
			if i > 0 {
				name.WriteByte('-')
			}
			r = unicode.ToLower(r)
		}
		name.WriteRune(r)
	}
	a := Algorithm{
		Name: name.String(), Short: row.Large.Name(), Exact: row.Exact,
		Open: row.Large, Tight: row.Tight,
	}
	for _, p := range row.Parts {
		a.Parts = append(a.Parts, fromRow(p))
	}
	if a.Parts != nil {
		a.Name = row.Name + partsName(a.Parts)
	}
	return a
}

// partsName names the parts of an All by their Shorts in capitals:
// "(TB,FW)".
func partsName(parts []Algorithm) string {
	shorts := make([]string, len(parts))
	for i, p := range parts {
		shorts[i] = strings.ToUpper(p.Short)
	}
	return "(" + strings.Join(shorts, ",") + ")"
}

// all returns the row of redislimit.All of parts, named "All" and
// [partsName]. Every part of its Tight configuration is exhausted by the
// same TightLimit calls, so a saturated key is denied by every part.
func all(parts ...Algorithm) Algorithm {
	open := make([]redislimit.Algorithm, len(parts))
	tight := make([]redislimit.Algorithm, len(parts))
	least := parts[0]
	for i, p := range parts {
		open[i], tight[i] = p.Open, p.Tight
		if p.Open.Limit() < least.Open.Limit() {
			least = p
		}
	}
	// All's Remaining is its parts' least: exactly the smallest part's
	// when that part's is exact, since the Open limits lie at least 2^16
	// apart and a benchmark makes fewer calls on one key.
	a := Algorithm{
		Name: "All" + partsName(parts), Exact: least.Exact, Parts: parts,
		Open: redislimit.All(open...), Tight: redislimit.All(tight...),
	}
	a.Short = a.Open.Name()
	return a
}

// parts returns the rows whose state a's keys hold: a's Parts, or a alone.
func (a Algorithm) parts() []Algorithm {
	if a.Parts != nil {
		return a.Parts
	}
	return []Algorithm{a}
}

// RedisKeys returns the Redis keys of user key k under the default prefix,
// one per part of [Algorithm.parts] and in their order: prefix + Short +
// ":{" + k + "}" for a single algorithm, prefix + "all:" + i + ":" + the
// part's Short + ":{" + k + "}" for part i of an All.
func (a Algorithm) RedisKeys(k string) []string {
	if a.Parts == nil {
		return []string{redislimit.DefaultPrefix + a.Short + ":{" + k + "}"}
	}
	keys := make([]string, len(a.Parts))
	for i, p := range a.Parts {
		keys[i] = redislimit.DefaultPrefix + "all:" + strconv.Itoa(i) + ":" + p.Short + ":{" + k + "}"
	}
	return keys
}

// benchTimeout replaces the limiter's default per-decision timeout in
// benchmarks: on a loaded 2-CPU machine running 64 goroutines, a decision
// can wait for Redis longer than the default, and a benchmark stops at the
// first error. The timeout changes no step of the decision's path.
const benchTimeout = 10 * time.Second

func limiterDecide(c redis.Scripter, alg redislimit.Algorithm) (*redislimit.Limiter, Decide, error) {
	l, err := redislimit.New(c, alg, redislimit.WithTimeout(benchTimeout))
	if err != nil {
		return nil, nil, err
	}
	return l, func(ctx context.Context, key string) (bool, error) {
		r, err := l.Allow(ctx, key)
		return r.Allowed, err
	}, nil
}

// peek returns Peek of key by a limiter running alg on c.
func peek(ctx context.Context, c *redis.Client, alg redislimit.Algorithm, key string) (redislimit.Result, error) {
	l, err := redislimit.New(c, alg)
	if err != nil {
		return redislimit.Result{}, err
	}
	return l.Peek(ctx, key)
}

// Allowed returns the benchmark subject of a's Open configuration: every
// call allowed. Its fixture check peeks at the key: still allowed, Remaining
// as the calls made imply, and a TTL on the Redis key.
func (a Algorithm) Allowed() Subject {
	limit := a.Open.Limit()
	return Subject{
		Allowed: true,
		Bind: func(c *redis.Client) (Decide, error) {
			_, d, err := limiterDecide(c, a.Open)
			return d, err
		},
		Verify: func(ctx context.Context, admin *redis.Client, key string, calls int64) error {
			r, err := peek(ctx, admin, a.Open, key)
			if err != nil {
				return err
			}
			want := limit - int(calls)
			switch {
			case !r.Allowed:
				return fmt.Errorf("Peek after %d calls = %+v, want allowed", calls, r)
			case a.Exact && r.Remaining != want:
				return fmt.Errorf("Peek after %d calls: Remaining = %d, want %d", calls, r.Remaining, want)
			case r.Remaining < want || r.Remaining > limit:
				return fmt.Errorf("Peek after %d calls: Remaining = %d, want %d to %d", calls, r.Remaining, want, limit)
			}
			// A refilling bucket's key expires as it becomes full, maybe
			// between Peek and PTTL; a window's key must still exist. No
			// key may lack a TTL.
			for i, k := range a.RedisKeys(key) {
				p := a.parts()[i]
				ttl, err := admin.PTTL(ctx, k).Result()
				switch {
				case err != nil:
					return fmt.Errorf("PTTL: %w", err)
				case ttl == -2 && (calls == 0 || !p.Exact):
				case ttl < 0:
					return fmt.Errorf("PTTL of %s after %d calls = %d, Remaining %d: want a key with a TTL", p.Name, calls, ttl, r.Remaining)
				}
			}
			return nil
		},
	}
}

// Saturated returns the benchmark subject of a's Tight configuration on a
// key exhausted before timing: every timed call denied. Its fixture check
// peeks at the key: denied, nothing remaining, and a TTL on the Redis key.
func (a Algorithm) Saturated() Subject {
	return Subject{
		Allowed: false,
		Bind: func(c *redis.Client) (Decide, error) {
			_, d, err := limiterDecide(c, a.Tight)
			return d, err
		},
		Prepare: func(ctx context.Context, d Decide, key string) error {
			for i := range TightLimit + 1 {
				ok, err := d(ctx, key)
				if err != nil {
					return err
				}
				if want := i < TightLimit; ok != want {
					return fmt.Errorf("saturating: call %d allowed = %v, want %v", i+1, ok, want)
				}
			}
			return nil
		},
		Verify: func(ctx context.Context, admin *redis.Client, key string, calls int64) error {
			r, err := peek(ctx, admin, a.Tight, key)
			if err != nil {
				return err
			}
			if r.Allowed || r.Remaining != 0 || r.RetryAfter <= 0 {
				return fmt.Errorf("Peek of saturated key = %+v, want denied with nothing remaining", r)
			}
			// Every part of an All denies: the script runs each part's
			// denial, not one part's denial and another's admission.
			if a.Parts != nil {
				if len(r.Parts) != len(a.Parts) {
					return fmt.Errorf("Peek of saturated key: %d part results, want %d", len(r.Parts), len(a.Parts))
				}
				for i, pr := range r.Parts {
					if pr.Allowed || pr.Remaining != 0 {
						return fmt.Errorf("Peek of saturated key: part %d (%s) = %+v, want denied with nothing remaining", i, a.Parts[i].Name, pr)
					}
				}
			}
			for _, k := range a.RedisKeys(key) {
				if err := CheckTTL(ctx, admin, k, redislimit.MaxWindow); err != nil {
					return err
				}
			}
			return nil
		},
	}
}
