package redislimit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/faultproxy"
	"github.com/redislimit/redislimit/internal/redistest"
)

// cacheOutageClient returns options for a client that gives up on a dead
// server at once instead of retrying with backoff.
func cacheOutageClient(o *redis.Options) {
	o.MaxRetries = -1
	o.DialerRetries = 1
	o.DialTimeout = time.Second
	o.ReadTimeout = 500 * time.Millisecond
	o.WriteTimeout = 500 * time.Millisecond
}

// newCache returns a cache built by NewCache, or fails tb.
func newCache[T any](tb testing.TB, client redis.Cmdable, opts ...redislimit.CacheOption) *redislimit.Cache[T] {
	tb.Helper()
	c, err := redislimit.NewCache[T](client, opts...)
	if err != nil {
		tb.Fatalf("NewCache: %v", err)
	}
	return c
}

// cacheAdvance lets d pass for the backend's key expiry.
func cacheAdvance(b redistest.Backend, d time.Duration) {
	if b.Mini != nil {
		b.Mini.FastForward(d)
		return
	}
	time.Sleep(d)
}

// cacheRedisErr fails t unless err is a Redis (network) failure: not nil,
// not a decode error, and carrying a net.Error.
func cacheRedisErr(t *testing.T, call string, err error) {
	t.Helper()
	var netErr net.Error
	switch {
	case err == nil:
		t.Fatalf("%s: err = nil, want a Redis error", call)
	case errors.Is(err, redislimit.ErrCacheDecode):
		t.Fatalf("%s: err = %v, want a Redis error, not a decode error", call, err)
	case !errors.As(err, &netErr):
		t.Fatalf("%s: err = %v (%T), want one wrapping a net.Error", call, err, err)
	}
}

func TestCacheMissHitDelete(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c := newCache[string](t, b.Client(t))

		v, found, err := c.Get(ctx, "k")
		if v != "" || found || err != nil {
			t.Fatalf("Get on empty cache = (%q, %v, %v), want (\"\", false, nil)", v, found, err)
		}
		if err := c.Set(ctx, "k", "v1", time.Minute); err != nil {
			t.Fatalf("Set: %v", err)
		}
		v, found, err = c.Get(ctx, "k")
		if v != "v1" || !found || err != nil {
			t.Fatalf("Get after Set = (%q, %v, %v), want (\"v1\", true, nil)", v, found, err)
		}
		// An empty string is a hit, not a miss.
		if err := c.Set(ctx, "empty", "", time.Minute); err != nil {
			t.Fatalf("Set empty: %v", err)
		}
		if v, found, err := c.Get(ctx, "empty"); v != "" || !found || err != nil {
			t.Fatalf("Get empty = (%q, %v, %v), want (\"\", true, nil)", v, found, err)
		}
		if err := c.Delete(ctx, "k"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if v, found, err := c.Get(ctx, "k"); v != "" || found || err != nil {
			t.Fatalf("Get after Delete = (%q, %v, %v), want (\"\", false, nil)", v, found, err)
		}
		if err := c.Delete(ctx, "never-set"); err != nil {
			t.Fatalf("Delete of a missing key: %v, want nil", err)
		}
	})
}

func TestCacheKeyLayoutAndEncoding(t *testing.T) {
	type item struct {
		N int `json:"n"`
	}
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		rc := b.Client(t)
		if err := newCache[string](t, rc).Set(ctx, "user42", "plain", time.Minute); err != nil {
			t.Fatalf("Set string: %v", err)
		}
		if err := newCache[[]byte](t, rc, redislimit.WithCachePrefix("bytes:")).Set(ctx, "user42", []byte{0, 0xff, '"'}, time.Minute); err != nil {
			t.Fatalf("Set []byte: %v", err)
		}
		if err := newCache[item](t, rc, redislimit.WithCachePrefix("app:")).Set(ctx, "user42", item{N: 7}, time.Minute); err != nil {
			t.Fatalf("Set struct: %v", err)
		}
		tests := []struct {
			redisKey string
			want     string
		}{
			{"rc:{user42}", "plain"},
			{"bytes:{user42}", "\x00\xff\""},
			{"app:{user42}", `{"n":7}`},
		}
		for _, tt := range tests {
			got, err := rc.Get(ctx, tt.redisKey).Result()
			if err != nil {
				t.Fatalf("GET %s: %v", tt.redisKey, err)
			}
			if got != tt.want {
				t.Errorf("GET %s = %q, want %q", tt.redisKey, got, tt.want)
			}
		}
		if n := redistest.KeyCount(t, rc); n != int64(len(tests)) {
			t.Errorf("DBSIZE = %d, want %d", n, len(tests))
		}
	})
}

// cacheRecord has the field kinds a JSON round trip can get wrong: time with
// nanoseconds and a zone, nil versus empty slices, non-ASCII text, nesting.
type cacheRecord struct {
	Name    string
	Created time.Time
	Tags    []string
	Scores  []float64
	Empty   []int
	Nested  map[string][]cacheRecord
	Ptr     *int
}

func cacheSampleRecord() cacheRecord {
	seven := 7
	return cacheRecord{
		Name:    "Zoë — 東京 🚀 \u0000 \"quoted\" <html>",
		Created: time.Date(2024, 2, 29, 23, 59, 58, 123456789, time.FixedZone("UTC+5:30", 5*3600+1800)),
		Tags:    []string{"α", "", "ß"},
		Scores:  []float64{0.1, -3, 1e300},
		Empty:   []int{},
		Nested: map[string][]cacheRecord{
			"kids": {{Name: "ünïcode", Created: time.Unix(0, 1).UTC()}},
		},
		Ptr: &seven,
	}
}

func TestCacheCodecRoundTrip(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c := newCache[cacheRecord](t, b.Client(t))
		want := cacheSampleRecord()
		if err := c.Set(ctx, "rec", want, time.Minute); err != nil {
			t.Fatalf("Set: %v", err)
		}
		got, found, err := c.Get(ctx, "rec")
		if err != nil || !found {
			t.Fatalf("Get = (_, %v, %v), want a hit", found, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Get after Set (-want +got):\n%s", diff)
		}

		// The caller that loads gets the value as a later Get reads it.
		loaded, err := c.GetOrLoad(ctx, "rec2", time.Minute, func(context.Context) (cacheRecord, error) {
			return want, nil
		})
		if err != nil {
			t.Fatalf("GetOrLoad: %v", err)
		}
		if diff := cmp.Diff(want, loaded); diff != "" {
			t.Errorf("GetOrLoad (-want +got):\n%s", diff)
		}
		again, _, err := c.Get(ctx, "rec2")
		if err != nil {
			t.Fatalf("Get after GetOrLoad: %v", err)
		}
		if diff := cmp.Diff(loaded, again); diff != "" {
			t.Errorf("Get after GetOrLoad differs from the loaded value (-loaded +get):\n%s", diff)
		}
	})
}

// cacheCountingCodec is JSON that counts its calls.
type cacheCountingCodec struct {
	marshal, unmarshal atomic.Int64
}

func (c *cacheCountingCodec) Marshal(v any) ([]byte, error) {
	c.marshal.Add(1)
	return json.Marshal(v)
}

func (c *cacheCountingCodec) Unmarshal(data []byte, v any) error {
	c.unmarshal.Add(1)
	return json.Unmarshal(data, v)
}

func TestCacheCustomCodec(t *testing.T) {
	m := redistest.Mini(t)
	rc := redistest.NewClient(t, m.Addr())
	ctx := context.Background()
	codec := &cacheCountingCodec{}
	c := newCache[string](t, rc, redislimit.WithCacheCodec(codec))
	if err := c.Set(ctx, "k", "hi", time.Minute); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if v, found, err := c.Get(ctx, "k"); v != "hi" || !found || err != nil {
		t.Fatalf("Get = (%q, %v, %v), want (\"hi\", true, nil)", v, found, err)
	}
	if got, _ := m.Get("rc:{k}"); got != `"hi"` {
		t.Errorf("stored %q, want the codec's JSON %q", got, `"hi"`)
	}
	if m, u := codec.marshal.Load(), codec.unmarshal.Load(); m != 1 || u != 1 {
		t.Errorf("codec calls: Marshal %d, Unmarshal %d; want 1 and 1", m, u)
	}
	// A nil codec keeps the default pass-through.
	if err := newCache[string](t, rc, redislimit.WithCacheCodec(nil)).Set(ctx, "raw", "hi", time.Minute); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if got, _ := m.Get("rc:{raw}"); got != "hi" {
		t.Errorf("with a nil codec stored %q, want %q", got, "hi")
	}
}

func TestCacheCorruptValue(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		rc := b.Client(t)
		for _, raw := range []string{"not json", `{"N":`, `"a string"`, ""} {
			if err := rc.Set(ctx, "rc:{bad}", raw, time.Minute).Err(); err != nil {
				t.Fatalf("SET: %v", err)
			}
			c := newCache[cacheRecord](t, rc)
			v, found, err := c.Get(ctx, "bad")
			if !errors.Is(err, redislimit.ErrCacheDecode) || found || !cmp.Equal(v, cacheRecord{}) {
				t.Errorf("Get of %q = (%+v, %v, %v), want (zero, false, ErrCacheDecode)", raw, v, found, err)
			}
			var loads atomic.Int64
			_, err = c.GetOrLoad(ctx, "bad", time.Minute, func(context.Context) (cacheRecord, error) {
				loads.Add(1)
				return cacheRecord{}, nil
			})
			if !errors.Is(err, redislimit.ErrCacheDecode) || loads.Load() != 0 {
				t.Errorf("GetOrLoad of %q: err = %v after %d loads, want ErrCacheDecode and no load", raw, err, loads.Load())
			}
			if _, err := c.GetMany(ctx, []string{"bad"}); !errors.Is(err, redislimit.ErrCacheDecode) {
				t.Errorf("GetMany of %q: err = %v, want ErrCacheDecode", raw, err)
			}
		}
	})
}

// cacheUnencodable fails to encode as JSON.
type cacheUnencodable struct{}

func (cacheUnencodable) MarshalJSON() ([]byte, error) { return nil, errors.New("no") }

func TestCacheEncodeError(t *testing.T) {
	m := redistest.Mini(t)
	rc := redistest.NewClient(t, m.Addr())
	ctx := context.Background()
	c := newCache[cacheUnencodable](t, rc)
	if err := c.Set(ctx, "k", cacheUnencodable{}, time.Minute); !errors.Is(err, redislimit.ErrCacheEncode) {
		t.Errorf("Set: err = %v, want ErrCacheEncode", err)
	}
	if err := c.SetMany(ctx, map[string]cacheUnencodable{"a": {}}, time.Minute); !errors.Is(err, redislimit.ErrCacheEncode) {
		t.Errorf("SetMany: err = %v, want ErrCacheEncode", err)
	}
	_, err := c.GetOrLoad(ctx, "k", time.Minute, func(context.Context) (cacheUnencodable, error) {
		return cacheUnencodable{}, nil
	})
	if !errors.Is(err, redislimit.ErrCacheEncode) {
		t.Errorf("GetOrLoad: err = %v, want ErrCacheEncode", err)
	}
	if n := len(m.Keys()); n != 0 {
		t.Errorf("%d keys written, want 0", n)
	}
}

func TestCacheTTLValidation(t *testing.T) {
	m := redistest.Mini(t)
	rc := redistest.NewClient(t, m.Addr())
	ctx := context.Background()
	c := newCache[string](t, rc)
	load := func(context.Context) (string, error) {
		t.Error("loader called with an invalid ttl")
		return "x", nil
	}
	for _, ttl := range []time.Duration{0, -time.Second, time.Nanosecond, time.Millisecond - 1} {
		if err := c.Set(ctx, "k", "v", ttl); !errors.Is(err, redislimit.ErrCacheTTL) {
			t.Errorf("Set with ttl %v: err = %v, want ErrCacheTTL", ttl, err)
		}
		if err := c.SetMany(ctx, map[string]string{"k": "v"}, ttl); !errors.Is(err, redislimit.ErrCacheTTL) {
			t.Errorf("SetMany with ttl %v: err = %v, want ErrCacheTTL", ttl, err)
		}
		if _, err := c.GetOrLoad(ctx, "k", ttl, load); !errors.Is(err, redislimit.ErrCacheTTL) {
			t.Errorf("GetOrLoad with ttl %v: err = %v, want ErrCacheTTL", ttl, err)
		}
	}
	if n := len(m.Keys()); n != 0 {
		t.Errorf("%d keys written, want 0", n)
	}
	if err := c.Set(ctx, "k", "v", redislimit.MinCacheTTL); err != nil {
		t.Errorf("Set with MinCacheTTL: %v", err)
	}
}

func TestCacheTTLExpiry(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		rc := b.Client(t)
		c := newCache[string](t, rc)
		const ttl = 200 * time.Millisecond
		if err := c.Set(ctx, "k", "v", ttl); err != nil {
			t.Fatalf("Set: %v", err)
		}
		pttl, err := rc.PTTL(ctx, "rc:{k}").Result()
		if err != nil {
			t.Fatalf("PTTL: %v", err)
		}
		if pttl <= 0 || pttl > ttl {
			t.Fatalf("PTTL = %v, want in (0, %v]", pttl, ttl)
		}
		var loads atomic.Int64
		load := func(context.Context) (string, error) {
			return "loaded" + strconv.FormatInt(loads.Add(1), 10), nil
		}
		if v, err := c.GetOrLoad(ctx, "k", time.Minute, load); v != "v" || err != nil {
			t.Fatalf("GetOrLoad before expiry = (%q, %v), want (\"v\", nil)", v, err)
		}
		cacheAdvance(b, ttl+100*time.Millisecond)
		if v, found, err := c.Get(ctx, "k"); found || err != nil {
			t.Fatalf("Get after expiry = (%q, %v, %v), want a miss", v, found, err)
		}
		if v, err := c.GetOrLoad(ctx, "k", time.Minute, load); v != "loaded1" || err != nil {
			t.Fatalf("GetOrLoad after expiry = (%q, %v), want (\"loaded1\", nil)", v, err)
		}
		pttl, err = rc.PTTL(ctx, "rc:{k}").Result()
		if err != nil || pttl <= 50*time.Second || pttl > time.Minute {
			t.Fatalf("PTTL after GetOrLoad = %v, %v; want about a minute", pttl, err)
		}
	})
}

func TestCacheJitterBounds(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		rc := b.Client(t)
		const (
			ttl      = time.Hour
			fraction = 0.25
			n        = 40
		)
		lo, hi := time.Duration(float64(ttl)*(1-fraction)), time.Duration(float64(ttl)*(1+fraction))
		c := newCache[int](t, rc, redislimit.WithCacheJitter(fraction))
		items := map[string]int{}
		for i := range n {
			key := "j" + strconv.Itoa(i)
			if i%2 == 0 {
				if err := c.Set(ctx, key, i, ttl); err != nil {
					t.Fatalf("Set: %v", err)
				}
			} else {
				items[key] = i
			}
		}
		if err := c.SetMany(ctx, items, ttl); err != nil {
			t.Fatalf("SetMany: %v", err)
		}
		distinct := map[time.Duration]bool{}
		for i := range n {
			pttl, err := rc.PTTL(ctx, "rc:{j"+strconv.Itoa(i)+"}").Result()
			if err != nil {
				t.Fatalf("PTTL: %v", err)
			}
			// A few milliseconds may pass between the write and the PTTL.
			if pttl < lo-time.Second || pttl > hi {
				t.Errorf("key %d: PTTL = %v, want in [%v, %v]", i, pttl, lo, hi)
			}
			distinct[pttl.Truncate(time.Second)] = true
		}
		// 40 draws over a 30-minute range: equal seconds are possible,
		// fewer than 10 distinct values would mean no jitter at all.
		if len(distinct) < 10 {
			t.Errorf("%d distinct TTLs over %d writes, want the jitter to spread them", len(distinct), n)
		}
	})
}

func TestCacheInvalidOptions(t *testing.T) {
	m := redistest.Mini(t)
	rc := redistest.NewClient(t, m.Addr())
	ctx := context.Background()
	tests := []struct {
		name string
		opt  redislimit.CacheOption
		ok   bool
	}{
		{"jitter -0.1", redislimit.WithCacheJitter(-0.1), false},
		{"jitter 1", redislimit.WithCacheJitter(1), false},
		{"jitter 1.5", redislimit.WithCacheJitter(1.5), false},
		{"jitter NaN", redislimit.WithCacheJitter(nan()), false},
		{"prefix with {", redislimit.WithCachePrefix("app{"), false},
		{"prefix with }", redislimit.WithCachePrefix("app}:"), false},
		{"timeout 0", redislimit.WithCacheTimeout(0), false},
		{"timeout -1s", redislimit.WithCacheTimeout(-time.Second), false},
		{"jitter 0", redislimit.WithCacheJitter(0), true},
		{"jitter 0.5", redislimit.WithCacheJitter(0.5), true},
		{"jitter 0.999", redislimit.WithCacheJitter(0.999), true},
		{"empty prefix", redislimit.WithCachePrefix(""), true},
		{"timeout 1ns", redislimit.WithCacheTimeout(time.Nanosecond), true},
		{"nil option", nil, true},
	}
	for _, tt := range tests {
		c, err := redislimit.NewCache[string](rc, tt.opt)
		if !tt.ok {
			if c != nil || !errors.Is(err, redislimit.ErrInvalidConfig) {
				t.Errorf("%s: NewCache = (%v, %v), want (nil, ErrInvalidConfig)", tt.name, c, err)
			}
			continue
		}
		if c == nil || err != nil {
			t.Errorf("%s: NewCache = (%v, %v), want a cache", tt.name, c, err)
		}
	}
	// Valid caches work; the failed ones wrote nothing.
	for _, opt := range []redislimit.CacheOption{nil, redislimit.WithCachePrefix("")} {
		c := newCache[string](t, rc, opt)
		if err := c.Set(ctx, "k", "v", time.Minute); err != nil {
			t.Errorf("Set: %v", err)
		}
	}
	if n := len(m.Keys()); n != 2 {
		t.Errorf("%d keys written, want 2 (default and empty prefix)", n)
	}
}

func nan() float64 { var zero float64; return zero / zero }

func TestCacheNilClient(t *testing.T) {
	clients := map[string]redis.Cmdable{
		"nil interface":      nil,
		"nil *redis.Client":  (*redis.Client)(nil),
		"nil *ClusterClient": (*redis.ClusterClient)(nil),
		"nil *Ring":          (*redis.Ring)(nil),
	}
	for name, rc := range clients {
		c, err := redislimit.NewCache[string](rc)
		if c != nil || !errors.Is(err, redislimit.ErrNilClient) {
			t.Errorf("%s: NewCache = (%v, %v), want (nil, ErrNilClient)", name, c, err)
		}
		// A bad option does not hide the nil client.
		c, err = redislimit.NewCache[string](rc, redislimit.WithCacheJitter(5), nil)
		if c != nil || !errors.Is(err, redislimit.ErrNilClient) {
			t.Errorf("%s with a bad option: NewCache = (%v, %v), want (nil, ErrNilClient)", name, c, err)
		}
	}
}

// A Cache that NewCache did not build says so from every method, with an
// error wrapping ErrInvalidConfig, and does not panic.
func TestCacheNotBuilt(t *testing.T) {
	ctx := context.Background()
	caches := map[string]*redislimit.Cache[string]{
		"zero Cache": new(redislimit.Cache[string]),
		"nil *Cache": nil,
	}
	for name, c := range caches {
		t.Run(name, func(t *testing.T) {
			check := func(method string, err error) {
				t.Helper()
				if !errors.Is(err, redislimit.ErrInvalidConfig) || !strings.Contains(err.Error(), "not built with NewCache") {
					t.Errorf("%s = %v, want ErrInvalidConfig saying the cache was not built with NewCache", method, err)
				}
			}
			_, found, err := c.Get(ctx, "k")
			if found {
				t.Error("Get found a value")
			}
			check("Get", err)
			check("Set", c.Set(ctx, "k", "v", time.Minute))
			check("Delete", c.Delete(ctx, "k"))
			_, err = c.GetOrLoad(ctx, "k", time.Minute, func(context.Context) (string, error) {
				t.Error("loader called without a client")
				return "", nil
			})
			check("GetOrLoad", err)
			m, err := c.GetMany(ctx, []string{"k"})
			if m != nil {
				t.Errorf("GetMany returned %v, want nil", m)
			}
			check("GetMany", err)
			check("SetMany", c.SetMany(ctx, map[string]string{"k": "v"}, time.Minute))
		})
	}
}

// Keys follow the Limiter's rules: "" and keys over MaxKeyLen bytes are
// refused with the Limiter's sentinels, before anything is sent, without a
// call of OnError, and the key never appears in the message.
func TestCacheKeyRules(t *testing.T) {
	m := redistest.Mini(t)
	rc := redistest.NewClient(t, m.Addr())
	cacheWarm(t, rc)
	var rt cacheCmdCounter
	rc.AddHook(&rt)
	var log cacheErrLog
	c := newCache[string](t, rc, redislimit.WithCacheOnError(log.onError), redislimit.WithCacheLoadOnError())
	ctx := context.Background()
	long := strings.Repeat("secret-", redislimit.MaxKeyLen/7+1)
	load := func(context.Context) (string, error) {
		t.Error("loader called for a bad key")
		return "", nil
	}
	for _, tt := range []struct {
		name string
		key  string
		want error
	}{
		{"empty", "", redislimit.ErrEmptyKey},
		{"MaxKeyLen+1", long[:redislimit.MaxKeyLen+1], redislimit.ErrKeyTooLong},
		{"long", long, redislimit.ErrKeyTooLong},
	} {
		check := func(method string, err error) {
			t.Helper()
			if !errors.Is(err, tt.want) {
				t.Errorf("%s key: %s = %v, want %v", tt.name, method, err, tt.want)
			}
			if err != nil && tt.key != "" && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s key: %s error %q holds the key", tt.name, method, err)
			}
		}
		_, found, err := c.Get(ctx, tt.key)
		if found {
			t.Errorf("%s key: Get found a value", tt.name)
		}
		check("Get", err)
		check("Set", c.Set(ctx, tt.key, "v", time.Minute))
		check("Delete", c.Delete(ctx, tt.key))
		_, err = c.GetOrLoad(ctx, tt.key, time.Minute, load)
		check("GetOrLoad", err)
		got, err := c.GetMany(ctx, []string{"fine", tt.key})
		if got != nil {
			t.Errorf("%s key: GetMany returned %v, want nil", tt.name, got)
		}
		check("GetMany", err)
		check("SetMany", c.SetMany(ctx, map[string]string{"fine": "v", tt.key: "v"}, time.Minute))
	}
	if n := rt.n.Load(); n != 0 {
		t.Errorf("%d round trips for bad keys, want none", n)
	}
	if n := len(m.Keys()); n != 0 {
		t.Errorf("%d keys written for bad keys, want none", n)
	}
	if n := log.count(); n != 0 {
		t.Errorf("OnError called %d times for bad keys, want none", n)
	}

	// The longest key is a key like any other.
	maxKey := long[:redislimit.MaxKeyLen]
	if err := c.Set(ctx, maxKey, "v", time.Minute); err != nil {
		t.Fatalf("Set with a key of MaxKeyLen bytes: %v", err)
	}
	if v, found, err := c.Get(ctx, maxKey); v != "v" || !found || err != nil {
		t.Errorf("Get with a key of MaxKeyLen bytes = (%q, %v, %v), want (\"v\", true, nil)", v, found, err)
	}
}

func TestCacheNilLoader(t *testing.T) {
	c := newCache[string](t, redistest.NewClient(t, redistest.Mini(t).Addr()))
	if _, err := c.GetOrLoad(context.Background(), "k", time.Minute, nil); !errors.Is(err, redislimit.ErrCacheNilLoader) {
		t.Errorf("GetOrLoad(nil loader) = %v, want ErrCacheNilLoader", err)
	}
}

func TestCacheCancelledContext(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		c := newCache[string](t, b.Client(t))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, found, err := c.Get(ctx, "k"); found || !errors.Is(err, context.Canceled) {
			t.Errorf("Get = (_, %v, %v), want context.Canceled", found, err)
		}
		if err := c.Set(ctx, "k", "v", time.Minute); !errors.Is(err, context.Canceled) {
			t.Errorf("Set = %v, want context.Canceled", err)
		}
		_, err := c.GetOrLoad(ctx, "k", time.Minute, func(context.Context) (string, error) {
			t.Error("loader called with a cancelled context")
			return "", nil
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("GetOrLoad = %v, want context.Canceled", err)
		}
	})
}

func TestCacheLoaderErrorNotCached(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		rc := b.Client(t)
		c := newCache[string](t, rc)
		errBoom := errors.New("database down")
		var loads atomic.Int64
		fail := func(context.Context) (string, error) {
			loads.Add(1)
			return "partial", errBoom
		}
		for i := 1; i <= 2; i++ {
			v, err := c.GetOrLoad(ctx, "k", time.Minute, fail)
			if err != errBoom || v != "" {
				t.Fatalf("call %d: GetOrLoad = (%q, %v), want (\"\", %v) unchanged", i, v, err, errBoom)
			}
			if got := loads.Load(); got != int64(i) {
				t.Fatalf("call %d: %d loads, want %d (errors are not cached)", i, got, i)
			}
		}
		if n := redistest.KeyCount(t, rc); n != 0 {
			t.Fatalf("DBSIZE = %d after failed loads, want 0", n)
		}
		v, err := c.GetOrLoad(ctx, "k", time.Minute, func(context.Context) (string, error) { return "ok", nil })
		if v != "ok" || err != nil {
			t.Fatalf("GetOrLoad after failures = (%q, %v), want (\"ok\", nil)", v, err)
		}
	})
}

func TestCacheGetOrLoadConcurrentLoadsOnce(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		c := newCache[cacheRecord](t, b.Client(t))
		want := cacheSampleRecord()
		var loads atomic.Int64
		load := func(context.Context) (cacheRecord, error) {
			loads.Add(1)
			time.Sleep(20 * time.Millisecond) // let the other callers arrive
			return want, nil
		}
		const n = 64
		start := make(chan struct{})
		results := make([]cacheRecord, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				results[i], errs[i] = c.GetOrLoad(ctx, "cold", time.Minute, load)
			})
		}
		close(start)
		wg.Wait()
		if got := loads.Load(); got != 1 {
			t.Errorf("loader ran %d times for %d concurrent callers, want 1", got, n)
		}
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("caller %d: %v", i, errs[i])
			}
			if diff := cmp.Diff(want, results[i]); diff != "" {
				t.Fatalf("caller %d (-want +got):\n%s", i, diff)
			}
		}
		// Each caller owns its copy.
		results[0].Tags[0] = "changed"
		if results[1].Tags[0] != want.Tags[0] {
			t.Errorf("callers share a slice: caller 1 sees %q", results[1].Tags[0])
		}
	})
}

func TestCacheGetOrLoadWaiterCancel(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		c := newCache[string](t, b.Client(t))
		started, release := make(chan struct{}), make(chan struct{})
		var loads atomic.Int64
		var loadCtxErr atomic.Value
		load := func(ctx context.Context) (string, error) {
			loads.Add(1)
			close(started)
			<-release
			loadCtxErr.Store(fmt.Sprint(ctx.Err()))
			return "fresh", nil
		}

		// The first caller gives up while its load runs.
		firstCtx, cancelFirst := context.WithCancel(context.Background())
		firstDone := make(chan error, 1)
		go func() {
			_, err := c.GetOrLoad(firstCtx, "k", time.Minute, load)
			firstDone <- err
		}()
		<-started

		// A waiter joins, then gives up too.
		waiterCtx, cancelWaiter := context.WithCancel(context.Background())
		waiterDone := make(chan error, 1)
		go func() {
			_, err := c.GetOrLoad(waiterCtx, "k", time.Minute, func(context.Context) (string, error) {
				t.Error("waiter started a second load")
				return "", nil
			})
			waiterDone <- err
		}()
		time.Sleep(20 * time.Millisecond) // let the waiter join the load
		cancelWaiter()
		cancelFirst()
		for name, ch := range map[string]chan error{"first caller": firstDone, "waiter": waiterDone} {
			select {
			case err := <-ch:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("%s: err = %v, want context.Canceled", name, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s did not return after its context was cancelled", name)
			}
		}

		// A patient caller joins the same load and gets its value.
		patient := make(chan string, 1)
		go func() {
			v, err := c.GetOrLoad(context.Background(), "k", time.Minute, func(context.Context) (string, error) {
				return "second load", nil
			})
			if err != nil {
				t.Errorf("patient caller: %v", err)
			}
			patient <- v
		}()
		time.Sleep(20 * time.Millisecond)
		close(release)
		select {
		case v := <-patient:
			if v != "fresh" {
				t.Errorf("patient caller got %q, want %q from the shared load", v, "fresh")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("patient caller did not return")
		}
		if got := loadCtxErr.Load(); got != "<nil>" {
			t.Errorf("load's context error = %v, want <nil>: callers giving up must not cancel it", got)
		}
		if got := loads.Load(); got != 1 {
			t.Errorf("%d loads, want 1", got)
		}
		if v, found, err := c.Get(context.Background(), "k"); v != "fresh" || !found || err != nil {
			t.Errorf("Get after the shared load = (%q, %v, %v), want (\"fresh\", true, nil)", v, found, err)
		}
	})
}

// cacheErrLog records the errors a cache passes to WithCacheOnError.
type cacheErrLog struct {
	mu   sync.Mutex
	errs []error
	ctxs []context.Context
}

func (l *cacheErrLog) onError(ctx context.Context, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
	l.ctxs = append(l.ctxs, ctx)
}

func (l *cacheErrLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.errs)
}

// take returns the errors and contexts recorded since the last take.
func (l *cacheErrLog) take() ([]error, []context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	errs, ctxs := l.errs, l.ctxs
	l.errs, l.ctxs = nil, nil
	return errs, ctxs
}

// cacheCallerKey marks the context of a test's calls, so that a test can
// tell it apart in OnError.
type cacheCallerKey struct{}

// cacheObserved fails t unless log holds exactly one error since its last
// take, err itself, passed with a context carrying cacheCallerKey.
func cacheObserved(t *testing.T, call string, log *cacheErrLog, err error) {
	t.Helper()
	errs, ctxs := log.take()
	if len(errs) != 1 || errs[0] != err {
		t.Errorf("%s: OnError got %v, want the error once: %v", call, errs, err)
		return
	}
	if ctxs[0].Value(cacheCallerKey{}) == nil {
		t.Errorf("%s: OnError got a context without the caller's values", call)
	}
}

// cacheCheckOutage runs every method against a client whose Redis is gone
// and checks that each returns the failure and passes it to OnError.
func cacheCheckOutage(t *testing.T, rc redis.Cmdable) {
	t.Helper()
	ctx := context.WithValue(context.Background(), cacheCallerKey{}, "caller")
	var log cacheErrLog
	c := newCache[string](t, rc, redislimit.WithCacheOnError(log.onError))

	v, found, err := c.Get(ctx, "k")
	if found || v != "" {
		t.Errorf("Get during outage = (%q, %v, _), want (\"\", false, _)", v, found)
	}
	cacheRedisErr(t, "Get", err)
	cacheObserved(t, "Get", &log, err)
	err = c.Set(ctx, "k", "v", time.Minute)
	cacheRedisErr(t, "Set", err)
	cacheObserved(t, "Set", &log, err)
	err = c.Delete(ctx, "k")
	cacheRedisErr(t, "Delete", err)
	cacheObserved(t, "Delete", &log, err)
	m, err := c.GetMany(ctx, []string{"a", "b"})
	if m != nil {
		t.Errorf("GetMany during outage returned %v, want nil", m)
	}
	cacheRedisErr(t, "GetMany", err)
	cacheObserved(t, "GetMany", &log, err)
	err = c.SetMany(ctx, map[string]string{"a": "1", "b": "2"}, time.Minute)
	cacheRedisErr(t, "SetMany", err)
	cacheObserved(t, "SetMany", &log, err)

	// By default GetOrLoad returns the error and does not load.
	var loads atomic.Int64
	load := func(context.Context) (string, error) {
		loads.Add(1)
		return "from db", nil
	}
	v, err = c.GetOrLoad(ctx, "k", time.Minute, load)
	if v != "" || loads.Load() != 0 {
		t.Errorf("GetOrLoad = %q after %d loads, want \"\" and no load", v, loads.Load())
	}
	cacheRedisErr(t, "GetOrLoad", err)
	cacheObserved(t, "GetOrLoad", &log, err)

	// WithCacheLoadOnError serves from the loader; OnError still sees the
	// read's error, and no write follows it.
	serving := newCache[string](t, rc, redislimit.WithCacheOnError(log.onError), redislimit.WithCacheLoadOnError())
	v, err = serving.GetOrLoad(ctx, "k", time.Minute, load)
	if v != "from db" || err != nil || loads.Load() != 1 {
		t.Errorf("GetOrLoad with WithCacheLoadOnError = (%q, %v) after %d loads, want (\"from db\", nil) after 1", v, err, loads.Load())
	}
	errs, _ := log.take()
	if len(errs) != 1 {
		t.Fatalf("GetOrLoad with WithCacheLoadOnError: OnError got %v, want the read's error once", errs)
	}
	cacheRedisErr(t, "the error GetOrLoad passed to OnError", errs[0])
	if !strings.Contains(errs[0].Error(), "cache get") {
		t.Errorf("GetOrLoad passed %q to OnError, want the read's error", errs[0])
	}
	// It is for GetOrLoad only: Get still returns its error.
	_, _, err = serving.Get(ctx, "k")
	cacheRedisErr(t, "Get with WithCacheLoadOnError", err)
	cacheObserved(t, "Get with WithCacheLoadOnError", &log, err)
}

func TestCacheOutageClosedPort(t *testing.T) {
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatalf("FreePort: %v", err)
	}
	rc := redistest.NewClient(t, "127.0.0.1:"+strconv.Itoa(port), cacheOutageClient)
	cacheCheckOutage(t, rc)
}

func TestCacheOutageServerStopped(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		rc := b.Client(t, cacheOutageClient)
		c := newCache[string](t, rc)
		if err := c.Set(ctx, "k", "cached", time.Minute); err != nil {
			t.Fatalf("Set: %v", err)
		}
		if v, found, err := c.Get(ctx, "k"); v != "cached" || !found || err != nil {
			t.Fatalf("Get before stop = (%q, %v, %v), want a hit", v, found, err)
		}
		if b.Mini != nil {
			b.Mini.Close()
		} else {
			b.Server.Stop()
		}
		cacheCheckOutage(t, rc)
	})
}

func TestCacheOutageTimeout(t *testing.T) {
	s := redistest.Start(t)
	p := faultproxy.Start(t, s.Addr())
	rc := redistest.NewClient(t, p.Addr(), cacheOutageClient, func(o *redis.Options) {
		o.ReadTimeout = 100 * time.Millisecond
	})
	ctx := context.Background()
	c := newCache[string](t, rc)
	if err := c.Set(ctx, "k", "v", time.Minute); err != nil {
		t.Fatalf("Set: %v", err)
	}
	p.StallReplies()
	v, found, err := c.Get(ctx, "k")
	if found || v != "" {
		t.Errorf("Get with stalled replies = (%q, %v, _), want (\"\", false, _)", v, found)
	}
	cacheRedisErr(t, "Get with stalled replies", err)
	var netErr net.Error
	if errors.As(err, &netErr) && !netErr.Timeout() {
		t.Errorf("Get with stalled replies: %v, want a timeout", err)
	}
}

// cacheSetFailer makes every SET fail, as a read-only replica or a full
// Redis would.
type cacheSetFailer struct{}

var errCacheSetRefused = errors.New("test: SET refused")

func (cacheSetFailer) DialHook(next redis.DialHook) redis.DialHook { return next }
func (cacheSetFailer) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "set" {
			cmd.SetErr(errCacheSetRefused)
			return errCacheSetRefused
		}
		return next(ctx, cmd)
	}
}
func (cacheSetFailer) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func TestCacheGetOrLoadWriteFailure(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.WithValue(context.Background(), cacheCallerKey{}, "caller")
		rc := b.Client(t)
		rc.AddHook(cacheSetFailer{})
		load := func(context.Context) (string, error) { return "from db", nil }
		var log cacheErrLog

		v, err := newCache[string](t, rc, redislimit.WithCacheOnError(log.onError)).GetOrLoad(ctx, "k", time.Minute, load)
		if v != "" || !errors.Is(err, errCacheSetRefused) {
			t.Errorf("GetOrLoad = (%q, %v), want (\"\", the SET error)", v, err)
		}
		cacheObserved(t, "GetOrLoad", &log, err)

		c := newCache[string](t, rc, redislimit.WithCacheOnError(log.onError), redislimit.WithCacheLoadOnError())
		v, err = c.GetOrLoad(ctx, "k", time.Minute, load)
		if v != "from db" || err != nil {
			t.Errorf("GetOrLoad with WithCacheLoadOnError = (%q, %v), want (\"from db\", nil)", v, err)
		}
		errs, _ := log.take()
		if len(errs) != 1 || !errors.Is(errs[0], errCacheSetRefused) {
			t.Errorf("GetOrLoad with WithCacheLoadOnError: OnError got %v, want the SET error once", errs)
		}
	})
}

// cacheWarm connects rc for single commands and for pipelines, so that a
// hook added afterwards sees only the calls under test, not a connection's
// HELLO and CLIENT SETINFO.
func cacheWarm(tb testing.TB, rc *redis.Client) {
	tb.Helper()
	ctx := context.Background()
	if err := rc.Ping(ctx).Err(); err != nil {
		tb.Fatalf("PING: %v", err)
	}
	if _, err := rc.Pipelined(ctx, func(p redis.Pipeliner) error { return p.Ping(ctx).Err() }); err != nil {
		tb.Fatalf("pipelined PING: %v", err)
	}
}

// cacheCmdCounter counts round trips: one per command, one per pipeline.
type cacheCmdCounter struct{ n atomic.Int64 }

func (c *cacheCmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *cacheCmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}
func (c *cacheCmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

func TestCacheGetManySetMany(t *testing.T) {
	type item struct {
		ID   int
		Name string
	}
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		rc := b.Client(t)
		cacheWarm(t, rc)
		var rt cacheCmdCounter
		rc.AddHook(&rt)
		c := newCache[item](t, rc)

		items := map[string]item{"a": {1, "ä"}, "b": {2, "b"}, "c": {3, ""}}
		if err := c.SetMany(ctx, items, time.Minute); err != nil {
			t.Fatalf("SetMany: %v", err)
		}
		if got := rt.n.Load(); got != 1 {
			t.Errorf("SetMany of %d items took %d round trips, want 1", len(items), got)
		}
		rt.n.Store(0)
		got, err := c.GetMany(ctx, []string{"a", "missing", "c", "b", "a"})
		if err != nil {
			t.Fatalf("GetMany: %v", err)
		}
		if diff := cmp.Diff(items, got); diff != "" {
			t.Errorf("GetMany (-want +got):\n%s", diff)
		}
		if got := rt.n.Load(); got != 1 {
			t.Errorf("GetMany took %d round trips, want 1", got)
		}
		rt.n.Store(0)
		if got, err := c.GetMany(ctx, nil); err != nil || got == nil || len(got) != 0 {
			t.Errorf("GetMany(nil) = (%v, %v), want an empty map", got, err)
		}
		if err := c.SetMany(ctx, nil, time.Minute); err != nil {
			t.Errorf("SetMany(nil) = %v", err)
		}
		if got := rt.n.Load(); got != 0 {
			t.Errorf("empty GetMany and SetMany took %d round trips, want 0", got)
		}
		for k := range items {
			pttl, err := rc.PTTL(ctx, "rc:{"+k+"}").Result()
			if err != nil || pttl <= 50*time.Second || pttl > time.Minute {
				t.Errorf("PTTL of %q = %v, %v; want about a minute", k, pttl, err)
			}
		}
	})
}

func TestCacheJitterTTL(t *testing.T) {
	maxMs := time.Duration(math.MaxInt64).Truncate(time.Millisecond)
	tests := []struct {
		ttl      time.Duration
		fraction float64
		r        float64
		want     time.Duration
	}{
		{time.Hour, 0, 0.7, time.Hour},
		{time.Hour, 0.1, 0, 54 * time.Minute},
		{time.Hour, 0.1, 0.5, time.Hour},
		{time.Hour, 0.1, math.Nextafter(1, 0), 66 * time.Minute},
		{time.Second, 0.5, 0.25, 750 * time.Millisecond},
		// Truncated to whole milliseconds.
		{1500 * time.Microsecond, 0, 0, time.Millisecond},
		{10*time.Millisecond + 999*time.Microsecond, 0, 0, 10 * time.Millisecond},
		// Never below the 1ms floor.
		{time.Millisecond, 0.9, 0, time.Millisecond},
		{2 * time.Millisecond, 0.99, 0, time.Millisecond},
		// Never past the largest Duration.
		{time.Duration(math.MaxInt64), 0.5, math.Nextafter(1, 0), maxMs},
	}
	for _, tt := range tests {
		got := redislimit.CacheJitterTTL(tt.ttl, tt.fraction, tt.r)
		if got != tt.want {
			t.Errorf("jitterTTL(%v, %v, %v) = %v, want %v", tt.ttl, tt.fraction, tt.r, got, tt.want)
		}
	}
}

func TestCacheCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	ctx := context.Background()
	rc := cl.Client()
	c := newCache[int](t, rc, redislimit.WithCachePrefix("shop:price:"))

	// Keys on every master, so that one batch spans all of them.
	items := map[string]int{}
	var keys []string
	for i, m := range cl.Masters() {
		for j, k := range cl.KeysOn(m, "sku", 3) {
			items[k] = 100*i + j
			keys = append(keys, k)
			// The hash tag puts each key in its user key's slot.
			if got := cl.MasterFor("shop:price:{" + k + "}"); got != m {
				t.Fatalf("Redis key of %q is on %s, want %s", k, got.Addr(), m.Addr())
			}
		}
	}
	if err := c.SetMany(ctx, items, time.Minute); err != nil {
		t.Fatalf("SetMany across %d masters: %v", len(cl.Masters()), err)
	}
	got, err := c.GetMany(ctx, append(keys, "missing"))
	if err != nil {
		t.Fatalf("GetMany across %d masters: %v", len(cl.Masters()), err)
	}
	if diff := cmp.Diff(items, got); diff != "" {
		t.Errorf("GetMany (-want +got):\n%s", diff)
	}
	for _, m := range cl.Masters() {
		if n := redistest.KeyCount(t, m.Client()); n != 3 {
			t.Errorf("master %s holds %d keys, want 3", m.Addr(), n)
		}
	}

	var loads atomic.Int64
	v, err := c.GetOrLoad(ctx, "sku-new", time.Minute, func(context.Context) (int, error) {
		loads.Add(1)
		return 42, nil
	})
	if v != 42 || err != nil || loads.Load() != 1 {
		t.Fatalf("GetOrLoad = (%d, %v) after %d loads, want (42, nil) after 1", v, err, loads.Load())
	}
	if v, found, err := c.Get(ctx, "sku-new"); v != 42 || !found || err != nil {
		t.Fatalf("Get = (%d, %v, %v), want (42, true, nil)", v, found, err)
	}
	if err := c.Delete(ctx, "sku-new"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, found, err := c.Get(ctx, "sku-new"); found || err != nil {
		t.Fatalf("Get after Delete = (_, %v, %v), want a miss", found, err)
	}
}

// FuzzCacheGet stores arbitrary bytes where a cached record lives: Get must
// return either a hit that survives a round trip or a decode error, never
// panic and never pass a zero value off as a hit.
func FuzzCacheGet(f *testing.F) {
	good, err := json.Marshal(cacheSampleRecord())
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{string(good), "", "null", "{}", `{"Created":"yesterday"}`, `{"Tags":[1]}`, "\xff\xfe", `[]`} {
		f.Add([]byte(seed))
	}
	m := redistest.Mini(f)
	rc := redistest.NewClient(f, m.Addr())
	c := newCache[cacheRecord](f, rc)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, raw []byte) {
		if err := m.Set("rc:{k}", string(raw)); err != nil {
			t.Fatal(err)
		}
		v, found, err := c.Get(ctx, "k")
		if err != nil {
			if found || !errors.Is(err, redislimit.ErrCacheDecode) || !cmp.Equal(v, cacheRecord{}) {
				t.Fatalf("Get(%q) = (%+v, %v, %v), want (zero, false, ErrCacheDecode)", raw, v, found, err)
			}
			return
		}
		if !found {
			t.Fatalf("Get(%q) = (_, false, nil) for a key that exists", raw)
		}
		if err := c.Set(ctx, "k", v, time.Minute); err != nil {
			t.Fatalf("Set of a decoded value: %v", err)
		}
		again, found, err := c.Get(ctx, "k")
		if err != nil || !found {
			t.Fatalf("Get after re-Set = (_, %v, %v)", found, err)
		}
		if diff := cmp.Diff(v, again); diff != "" {
			t.Fatalf("round trip of %q changed the value (-first +second):\n%s", raw, diff)
		}
	})
}
