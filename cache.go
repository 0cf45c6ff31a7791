package redislimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

// DefaultCachePrefix is the key prefix a [Cache] uses unless
// [WithCachePrefix] sets another. The Redis key of cache key K is
// DefaultCachePrefix + "{" + K + "}", for example "rc:{user42}".
const DefaultCachePrefix = "rc:"

// MinCacheTTL is the shortest TTL a [Cache] accepts: Redis keeps expiry
// times in milliseconds.
const MinCacheTTL = time.Millisecond

var (
	// ErrCacheNilClient is returned by every [Cache] method when the cache
	// was built by [NewCache] with a nil client, or is the zero Cache.
	ErrCacheNilClient = errors.New("redislimit: cache: nil redis client")

	// ErrCacheTTL is returned, and nothing is written, when a TTL is shorter
	// than [MinCacheTTL] (zero and negative TTLs included).
	ErrCacheTTL = errors.New("redislimit: cache: ttl must be at least 1ms")

	// ErrCacheConfig is returned, wrapped with the reason, by every [Cache]
	// method when [NewCache] was given an invalid option: a jitter fraction
	// outside [0, 1), or a prefix holding '{' or '}'.
	ErrCacheConfig = errors.New("redislimit: cache: invalid configuration")

	// ErrCacheNilLoader is returned by [Cache.GetOrLoad] when load is nil.
	ErrCacheNilLoader = errors.New("redislimit: cache: nil loader")

	// ErrCacheDecode is returned, wrapped together with the codec's error,
	// when a value stored in Redis does not decode into the cache's type.
	// The value is then neither a hit nor a miss: found is false and the
	// returned value is the zero value.
	ErrCacheDecode = errors.New("redislimit: cache: value does not decode")

	// ErrCacheEncode is returned, wrapped together with the codec's error,
	// when a value cannot be encoded. Nothing is written.
	ErrCacheEncode = errors.New("redislimit: cache: value does not encode")
)

// Codec turns cache values into bytes and back. Marshal receives a T;
// Unmarshal receives a *T holding the zero value, and data that it may keep.
// A Codec must be safe for concurrent use.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSONCodec is a [Codec] using encoding/json. It is the default for every
// value type except string and []byte, which are stored as they are. The
// zero value is ready to use and safe for concurrent use.
type JSONCodec struct{}

// Marshal returns the JSON encoding of v.
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal parses the JSON in data into the value v points to.
func (JSONCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// CacheOption configures a [Cache] built by [NewCache].
type CacheOption func(*cacheConfig)

type cacheConfig struct {
	prefix  string
	codec   Codec
	jitter  float64
	onError func(op string, err error)
}

// WithCachePrefix sets the prefix of every Redis key the cache uses. The
// default is [DefaultCachePrefix]. The cache key itself is always wrapped
// in a {hash tag}, so a prefix needs none and must not hold '{' or '}'
// (every method then returns [ErrCacheConfig]).
func WithCachePrefix(p string) CacheOption {
	return func(c *cacheConfig) { c.prefix = p }
}

// WithCacheCodec sets the codec that encodes values. By default string and
// []byte values are stored unchanged and every other type as JSON
// ([JSONCodec]). A codec set here is used for every type, string and []byte
// included. A nil codec keeps the default.
func WithCacheCodec(codec Codec) CacheOption {
	return func(c *cacheConfig) { c.codec = codec }
}

// WithCacheJitter spreads the expiry of keys written together: each write
// uses a TTL drawn uniformly from [ttl·(1−fraction), ttl·(1+fraction)],
// truncated to whole milliseconds and never below [MinCacheTTL]. fraction
// must be in [0, 1); the default 0 writes the TTL unchanged. With a
// fraction outside that range every method returns [ErrCacheConfig].
func WithCacheJitter(fraction float64) CacheOption {
	return func(c *cacheConfig) { c.jitter = fraction }
}

// WithCacheErrorHook makes [Cache.GetOrLoad] keep serving when Redis fails:
// a failed read runs the loader and returns its value, a failed write still
// returns the loaded value, and each Redis error is handed to hook with op
// "get" or "set" instead of being returned. Without a hook (the default, and
// when hook is nil) GetOrLoad returns Redis errors. The hook may be called
// from several goroutines at once and must be safe for concurrent use. Get,
// Set, Delete, GetMany and SetMany always return their errors and never call
// the hook.
func WithCacheErrorHook(hook func(op string, err error)) CacheOption {
	return func(c *cacheConfig) { c.onError = hook }
}

// Cache is a typed cache of T values in Redis. A key that is not in Redis
// is a miss, reported as found == false with a nil error; every other
// failure (Redis unreachable, a timeout, a cancelled context, a stored value
// that does not decode) is an error, never a miss.
//
// Cache key K lives in the Redis key prefix + "{" + K + "}" (see
// [DefaultCachePrefix]): with the hash tag a Redis Cluster slot depends on
// K alone, so entries spread over the slots whatever the prefix.
// Keys may be any string, the empty string included. Error messages never
// contain a key.
//
// Build a Cache with [NewCache]. The zero Cache returns [ErrCacheNilClient]
// from every method. A Cache is safe for concurrent use and must not be
// copied after first use.
type Cache[T any] struct {
	client  redis.Cmdable
	err     error // configuration error returned by every method
	prefix  string
	jitter  float64
	onError func(op string, err error)
	encode  func(T) (any, error)    // returns a string or []byte for go-redis
	decode  func(string) (T, error) // wraps its failure with ErrCacheDecode
	loads   singleflight.Group      // keyed by Redis key
}

// NewCache returns a cache of T values stored through client, which may be
// a *redis.Client, *redis.ClusterClient, *redis.Ring or any other
// [redis.Cmdable]. NewCache does not fail: with a nil client every method
// returns [ErrCacheNilClient], and with an invalid option every method
// returns an error wrapping [ErrCacheConfig].
func NewCache[T any](client redis.Cmdable, opts ...CacheOption) *Cache[T] {
	cfg := cacheConfig{prefix: DefaultCachePrefix}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	c := &Cache[T]{
		client:  client,
		prefix:  cfg.prefix,
		jitter:  cfg.jitter,
		onError: cfg.onError,
	}
	switch {
	case isNilClient(client):
		c.client, c.err = nil, ErrCacheNilClient
	case !(cfg.jitter >= 0 && cfg.jitter < 1): // NaN fails both comparisons
		c.err = fmt.Errorf("%w: jitter fraction %v is outside [0, 1)", ErrCacheConfig, cfg.jitter)
	case strings.ContainsAny(cfg.prefix, "{}"):
		c.err = fmt.Errorf("%w: prefix %q holds '{' or '}'", ErrCacheConfig, cfg.prefix)
	}
	c.encode, c.decode = cacheCodec[T](cfg.codec)
	return c
}

// isNilClient reports whether client is nil or an interface holding a nil
// pointer, such as (*redis.Client)(nil), whose methods would panic.
func isNilClient(client redis.Cmdable) bool {
	if client == nil {
		return true
	}
	v := reflect.ValueOf(client)
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Func, reflect.Slice, reflect.Chan:
		return v.IsNil()
	}
	return false
}

// cacheCodec returns the encode and decode functions for T: pass-through
// for string and []byte unless codec is set, codec (JSON by default)
// otherwise.
func cacheCodec[T any](codec Codec) (func(T) (any, error), func(string) (T, error)) {
	if codec == nil {
		var zero T
		switch any(zero).(type) {
		case string:
			return func(v T) (any, error) { return any(v), nil },
				func(s string) (T, error) { return any(s).(T), nil }
		case []byte:
			return func(v T) (any, error) { return any(v), nil },
				func(s string) (T, error) { return any([]byte(s)).(T), nil }
		}
		codec = JSONCodec{}
	}
	encode := func(v T) (any, error) {
		b, err := codec.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrCacheEncode, err)
		}
		return b, nil
	}
	decode := func(s string) (T, error) {
		var v T
		if err := codec.Unmarshal([]byte(s), &v); err != nil {
			var zero T
			return zero, fmt.Errorf("%w: %w", ErrCacheDecode, err)
		}
		return v, nil
	}
	return encode, decode
}

// usable returns the error every method returns before touching Redis.
func (c *Cache[T]) usable() error {
	if c == nil || c.client == nil {
		return ErrCacheNilClient
	}
	return c.err
}

// redisKey returns the Redis key of key: the prefix, then key as a hash tag
// so that Redis Cluster maps it to one slot whatever the prefix.
func (c *Cache[T]) redisKey(key string) string {
	return c.prefix + "{" + key + "}"
}

// getResult reads a GET reply. It is the one place where redis.Nil becomes
// a miss; every other error is returned, wrapped.
func getResult(cmd *redis.StringCmd) (raw string, found bool, err error) {
	raw, err = cmd.Result()
	switch {
	case err == nil:
		return raw, true, nil
	case errors.Is(err, redis.Nil):
		return "", false, nil
	default:
		return "", false, fmt.Errorf("redislimit: cache get: %w", err)
	}
}

func checkCacheTTL(ttl time.Duration) error {
	if ttl < MinCacheTTL {
		return ErrCacheTTL
	}
	return nil
}

// writeTTL returns the TTL of one write: ttl itself, or ttl jittered as
// [WithCacheJitter] describes.
func (c *Cache[T]) writeTTL(ttl time.Duration) time.Duration {
	if c.jitter == 0 {
		return ttl
	}
	return jitterTTL(ttl, c.jitter, rand.Float64())
}

// jitterTTL scales ttl by 1 − fraction + 2·fraction·r, for r in [0, 1),
// truncates it to whole milliseconds and keeps it within
// [MinCacheTTL, the largest Duration].
func jitterTTL(ttl time.Duration, fraction, r float64) time.Duration {
	f := float64(ttl) * (1 - fraction + 2*fraction*r)
	if f >= math.MaxInt64 {
		return time.Duration(math.MaxInt64).Truncate(time.Millisecond)
	}
	d := time.Duration(f).Truncate(time.Millisecond)
	if d < MinCacheTTL {
		return MinCacheTTL
	}
	return d
}

// Get returns the value stored under key. A key that is not in Redis is a
// miss: the zero value, found == false and a nil error. Any other failure
// returns found == false and a non-nil error, wrapping [ErrCacheDecode] when
// the stored value does not decode, or the Redis or context error.
func (c *Cache[T]) Get(ctx context.Context, key string) (v T, found bool, err error) {
	if err := c.usable(); err != nil {
		return v, false, err
	}
	raw, found, err := getResult(c.client.Get(ctx, c.redisKey(key)))
	if err != nil || !found {
		return v, false, err
	}
	v, err = c.decode(raw)
	if err != nil {
		return v, false, err
	}
	return v, true, nil
}

// Set stores v under key for ttl, jittered if [WithCacheJitter] is set. A
// ttl shorter than [MinCacheTTL] returns [ErrCacheTTL] and writes nothing.
func (c *Cache[T]) Set(ctx context.Context, key string, v T, ttl time.Duration) error {
	if err := c.usable(); err != nil {
		return err
	}
	if err := checkCacheTTL(ttl); err != nil {
		return err
	}
	enc, err := c.encode(v)
	if err != nil {
		return err
	}
	return c.write(ctx, c.redisKey(key), enc, ttl)
}

func (c *Cache[T]) write(ctx context.Context, rkey string, enc any, ttl time.Duration) error {
	if err := c.client.Set(ctx, rkey, enc, c.writeTTL(ttl)).Err(); err != nil {
		return fmt.Errorf("redislimit: cache set: %w", err)
	}
	return nil
}

// Delete removes key. Deleting a key that is not in Redis is not an error.
func (c *Cache[T]) Delete(ctx context.Context, key string) error {
	if err := c.usable(); err != nil {
		return err
	}
	if err := c.client.Del(ctx, c.redisKey(key)).Err(); err != nil {
		return fmt.Errorf("redislimit: cache delete: %w", err)
	}
	return nil
}

// GetOrLoad returns the value stored under key, or on a miss calls load,
// stores its value for ttl (jittered if [WithCacheJitter] is set) and
// returns it.
//
// Within one Cache, concurrent calls for the same key share a single
// Redis read and at most one call of load: the first caller starts the
// work and later callers wait for it, using the first caller's ttl and
// load. The shared work runs with context.WithoutCancel of the first
// caller's context, so it keeps its values but is not cancelled when that
// caller gives up; load should bound its own run time. A caller whose
// context ends stops waiting and returns its context error, and the shared
// work still completes and fills the cache. Every caller gets its own copy
// of the value, decoded from its encoded form, so a loaded value reads
// exactly as a later [Cache.Get] would return it. A panic in load is not
// recovered.
//
// An error from load is returned unchanged and nothing is stored. A stored
// value that does not decode returns an error wrapping [ErrCacheDecode] and
// load is not called. A ttl shorter than [MinCacheTTL] returns
// [ErrCacheTTL].
//
// When Redis fails, GetOrLoad returns the Redis error (without calling load
// when the read failed), unless [WithCacheErrorHook] is set: then a failed
// read is handed to the hook, load runs and its value is returned without
// an attempt to store it, and a failed write is handed to the hook and the
// loaded value returned. Either way the Redis error reaches the caller or
// the hook.
func (c *Cache[T]) GetOrLoad(ctx context.Context, key string, ttl time.Duration, load func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	if err := c.usable(); err != nil {
		return zero, err
	}
	if err := checkCacheTTL(ttl); err != nil {
		return zero, err
	}
	if load == nil {
		return zero, ErrCacheNilLoader
	}
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("redislimit: cache get: %w", err)
	}
	rkey := c.redisKey(key)
	shared := context.WithoutCancel(ctx)
	ch := c.loads.DoChan(rkey, func() (any, error) {
		return c.fill(shared, rkey, ttl, load)
	})
	select {
	case <-ctx.Done():
		return zero, fmt.Errorf("redislimit: cache get: %w", ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return zero, r.Err
		}
		return c.decode(r.Val.(string))
	}
}

// fill is the work GetOrLoad callers share: read key, and on a miss load,
// encode and store. It returns the encoded value, which each caller decodes.
// The read is repeated here rather than done before joining, so a call that
// arrives just after another call's load has finished finds the stored value
// instead of loading again.
func (c *Cache[T]) fill(ctx context.Context, rkey string, ttl time.Duration, load func(context.Context) (T, error)) (string, error) {
	raw, found, err := getResult(c.client.Get(ctx, rkey))
	if found {
		return raw, nil
	}
	readFailed := err != nil
	if readFailed {
		if c.onError == nil {
			return "", err
		}
		c.onError("get", err)
	}
	v, err := load(ctx)
	if err != nil {
		return "", err
	}
	enc, err := c.encode(v)
	if err != nil {
		return "", err
	}
	// After a failed read Redis is most likely down; writing would add
	// another timeout to a call that can already be answered.
	if !readFailed {
		if err := c.write(ctx, rkey, enc, ttl); err != nil {
			if c.onError == nil {
				return "", err
			}
			c.onError("set", err)
		}
	}
	switch e := enc.(type) {
	case string:
		return e, nil
	case []byte:
		return string(e), nil
	}
	return "", fmt.Errorf("%w: encoder returned %T", ErrCacheEncode, enc)
}

// GetMany returns the values stored under keys, in one pipeline of GET
// commands (one round trip on a single node; per-slot batches on Redis
// Cluster, where MGET would fail across slots). Keys that are missing are
// absent from the map; duplicate keys are fetched once each time they
// appear. On any error, including a value that does not decode
// ([ErrCacheDecode]), GetMany returns a nil map and the first error.
func (c *Cache[T]) GetMany(ctx context.Context, keys []string) (map[string]T, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	values := make(map[string]T, len(keys))
	if len(keys) == 0 {
		return values, nil
	}
	pipe := c.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.Get(ctx, c.redisKey(k))
	}
	// Exec reports the first command's error, a miss's redis.Nil included;
	// each command carries its own error (a failed connection sets it on
	// all of them), so the replies are read one by one instead.
	_, _ = pipe.Exec(ctx)
	for i, cmd := range cmds {
		raw, found, err := getResult(cmd)
		if err != nil {
			return nil, err
		}
		if !found {
			continue
		}
		v, err := c.decode(raw)
		if err != nil {
			return nil, err
		}
		values[keys[i]] = v
	}
	return values, nil
}

// SetMany stores every value of items under its key for ttl (each write
// jittered on its own if [WithCacheJitter] is set), in one pipeline of SET
// commands. All values are encoded before anything is written, so an
// encoding error writes nothing; the writes themselves are not atomic, and
// after a Redis error some of them may have been applied. A ttl shorter
// than [MinCacheTTL] returns [ErrCacheTTL].
func (c *Cache[T]) SetMany(ctx context.Context, items map[string]T, ttl time.Duration) error {
	if err := c.usable(); err != nil {
		return err
	}
	if err := checkCacheTTL(ttl); err != nil {
		return err
	}
	if len(items) == 0 {
		return nil
	}
	encoded := make(map[string]any, len(items))
	for k, v := range items {
		enc, err := c.encode(v)
		if err != nil {
			return err
		}
		encoded[k] = enc
	}
	pipe := c.client.Pipeline()
	for k, enc := range encoded {
		pipe.Set(ctx, c.redisKey(k), enc, c.writeTTL(ttl))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("redislimit: cache set: %w", err)
	}
	return nil
}
