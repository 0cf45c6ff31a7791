package redislimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync/atomic"
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

// Errors of a [Cache], besides the module's: [ErrInvalidConfig] and
// [ErrNilClient] from [NewCache], [ErrEmptyKey] and [ErrKeyTooLong] for a
// bad key, [ErrTimeout] and [ErrCircuitOpen] when Redis does not answer in
// time. Match them with [errors.Is]; messages never contain a key.
var (
	// ErrCacheTTL is returned, and nothing is written, when a TTL is shorter
	// than [MinCacheTTL] (zero and negative TTLs included).
	ErrCacheTTL = errors.New("redislimit: cache: ttl must be at least 1ms")

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

// errCacheNotBuilt is returned by every method of a Cache that [NewCache]
// did not build: the zero Cache, or a nil *Cache.
var errCacheNotBuilt error = &cacheError{err: fmt.Errorf("%w: not built with NewCache", ErrInvalidConfig)}

// cacheError is an error of one Cache operation (op is "get", "set",
// "delete", or "" for the cache as a whole). Its message is
// "redislimit: cache <op>: " and err's, without err's own "redislimit: ".
type cacheError struct {
	op  string
	err error
}

func (e *cacheError) Error() string {
	msg := strings.TrimPrefix(e.err.Error(), "redislimit: ")
	if e.op == "" {
		return "redislimit: cache: " + msg
	}
	return "redislimit: cache " + e.op + ": " + msg
}

func (e *cacheError) Unwrap() error { return e.err }

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
	prefix      string
	codec       Codec
	jitter      float64
	timeout     time.Duration
	onError     func(context.Context, error)
	loadOnError bool
}

// WithCachePrefix sets the prefix of every Redis key the cache uses. The
// default is [DefaultCachePrefix]. The cache key itself is always wrapped
// in a {hash tag}, so a prefix needs none; a prefix holding '{' or '}'
// makes [NewCache] return an error wrapping [ErrInvalidConfig].
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
// must be in [0, 1); the default 0 writes the TTL unchanged. A fraction
// outside that range makes [NewCache] return an error wrapping
// [ErrInvalidConfig].
func WithCacheJitter(fraction float64) CacheOption {
	return func(c *cacheConfig) { c.jitter = fraction }
}

// WithCacheTimeout sets how long one call of a [Cache] method may wait for
// Redis, including a reconnection; [Cache.GetOrLoad] applies it to its read
// and to its write separately, not to load. Past it the method returns an
// error wrapping [ErrTimeout]. The bound holds on every client, including
// those built with default options, where go-redis ignores context
// deadlines on socket reads: the call then runs on another goroutine, which
// the method stops waiting for. That hand-off costs a few microseconds a
// call; a client with ContextTimeoutEnabled in its options bounds reads by
// the context's deadline, and its calls run on the caller's goroutine. A
// caller's context with an earlier deadline ends the wait sooner, with the
// context's error. The default is
// [DefaultTimeout]; a d of zero or less makes [NewCache] return an
// error wrapping [ErrInvalidConfig].
func WithCacheTimeout(d time.Duration) CacheOption {
	return func(c *cacheConfig) { c.timeout = d }
}

// WithCacheOnError sets a function called with every error from Redis that
// a [Cache] method meets: a connection or protocol error, an error reply,
// [ErrTimeout] and [ErrCircuitOpen], each wrapped as the method returns it.
// It observes and never changes an outcome. It is not called for bad input
// (a key, a TTL, a nil loader), for a caller's context that ended, for a
// miss, or for errors of the codec ([ErrCacheDecode], [ErrCacheEncode]) or
// of a loader.
//
// f runs with the caller's ctx before the method returns, on the calling
// goroutine, so it should be quick; it may be called concurrently. The
// Redis calls that concurrent [Cache.GetOrLoad] callers share are reported
// once, from the goroutine running them, with the ctx of the caller that
// started them (its values, not its cancellation). The default is none. A
// logger fits:
//
//	redislimit.WithCacheOnError(func(ctx context.Context, err error) {
//		slog.WarnContext(ctx, "cache degraded", "err", err)
//	})
func WithCacheOnError(f func(ctx context.Context, err error)) CacheOption {
	return func(c *cacheConfig) { c.onError = f }
}

// WithCacheLoadOnError makes [Cache.GetOrLoad] keep serving when Redis
// fails: when its read fails, load runs and its value is returned, without
// an attempt to store it; when its write fails, the loaded value is
// returned. The Redis error is then not returned; pass it to
// [WithCacheOnError] to see it. By default GetOrLoad returns Redis errors,
// without calling load when the read failed. Other methods are unchanged:
// they always return their errors.
func WithCacheLoadOnError() CacheOption {
	return func(c *cacheConfig) { c.loadOnError = true }
}

// Cache is a typed cache of T values in Redis. A key that is not in Redis
// is a miss, reported as found == false with a nil error; every other
// failure (Redis unreachable, a timeout, a cancelled context, a stored value
// that does not decode) is an error, never a miss.
//
// Cache key K lives in the Redis key prefix + "{" + K + "}" (see
// [DefaultCachePrefix]): with the hash tag a Redis Cluster slot depends on
// K alone, so entries spread over the slots whatever the prefix. Keys
// follow the [Limiter]'s rules: any byte string from 1 to [MaxKeyLen]
// bytes; "" returns [ErrEmptyKey] and a longer key [ErrKeyTooLong], before
// anything is sent to Redis. Error messages never contain a key.
//
// Each method waits for Redis no longer than the cache's timeout
// ([WithCacheTimeout]) or its context's deadline, whichever comes first.
//
// Build a Cache with [NewCache]. Every method of the zero Cache returns an
// error wrapping [ErrInvalidConfig]. A Cache is safe for concurrent use and
// must not be copied after first use.
type Cache[T any] struct {
	client      redis.Cmdable // nil: not built by NewCache
	prefix      string
	jitter      float64
	timeout     time.Duration
	inline      bool // the client bounds socket reads by context deadlines
	onError     func(context.Context, error)
	loadOnError bool
	encode      func(T) (any, error)    // returns a string or []byte for go-redis
	decode      func(string) (T, error) // wraps its failure with ErrCacheDecode
	loads       singleflight.Group      // keyed by Redis key
	abandoned   atomic.Int32            // calls that timed out and still wait for Redis
}

// NewCache returns a cache of T values stored through client, which may be
// a *redis.Client, *redis.ClusterClient, *redis.Ring or any other
// [redis.Cmdable]. It returns [ErrNilClient] when client is nil (or a nil
// pointer), and an error wrapping [ErrInvalidConfig] when an option is
// invalid. NewCache does not contact Redis.
func NewCache[T any](client redis.Cmdable, opts ...CacheOption) (*Cache[T], error) {
	if isNil(client) {
		return nil, ErrNilClient
	}
	cfg := cacheConfig{prefix: DefaultCachePrefix, timeout: DefaultTimeout}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	switch {
	case !(cfg.jitter >= 0 && cfg.jitter < 1): // NaN fails both comparisons
		return nil, &cacheError{err: fmt.Errorf("%w: jitter fraction %v is outside [0, 1)", ErrInvalidConfig, cfg.jitter)}
	case strings.ContainsAny(cfg.prefix, "{}"):
		return nil, &cacheError{err: fmt.Errorf("%w: prefix %q holds '{' or '}'", ErrInvalidConfig, cfg.prefix)}
	case cfg.timeout <= 0:
		return nil, &cacheError{err: fmt.Errorf("%w: timeout %v, want more than 0", ErrInvalidConfig, cfg.timeout)}
	}
	c := &Cache[T]{
		client:      client,
		prefix:      cfg.prefix,
		jitter:      cfg.jitter,
		timeout:     cfg.timeout,
		inline:      honoursDeadlines(client),
		onError:     cfg.onError,
		loadOnError: cfg.loadOnError,
	}
	c.encode, c.decode = cacheCodec[T](cfg.codec)
	return c, nil
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

// check returns the error a method returns, before touching Redis, when c
// was not built by NewCache or key is not a valid key.
func (c *Cache[T]) check(key string) error {
	if c == nil || c.client == nil {
		return errCacheNotBuilt
	}
	return checkKey(key)
}

// redisKey returns the Redis key of key: the prefix, then key as a hash tag
// so that Redis Cluster maps it to one slot whatever the prefix.
func (c *Cache[T]) redisKey(key string) string {
	return c.prefix + "{" + key + "}"
}

// getResult reads a GET reply. It is the one place where redis.Nil becomes
// a miss; every other error is returned.
func getResult(cmd *redis.StringCmd) (raw string, found bool, err error) {
	raw, err = cmd.Result()
	switch {
	case err == nil:
		return raw, true, nil
	case errors.Is(err, redis.Nil):
		return "", false, nil
	default:
		return "", false, err
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

// do runs send, which sends commands to Redis with the context it is
// given, and waits for it no longer than the cache's timeout or ctx's end.
// It returns nil, the caller's context error, or the Redis error (wrapping
// [ErrTimeout] past the timeout) after passing it to OnError; each is
// wrapped with op. When do returns an error, send may still be running:
// the caller must not read what send writes.
func (c *Cache[T]) do(ctx context.Context, op string, send func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return &cacheError{op, err}
	}
	deadline := time.Now().Add(c.timeout)
	err := c.run(ctx, deadline, send)
	if err == nil {
		return nil
	}
	if cerr := callerDone(ctx); cerr != nil {
		return &cacheError{op, cerr}
	}
	if !time.Now().Before(deadline) {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w after %v", ErrTimeout, c.timeout)
		} else {
			err = fmt.Errorf("%w after %v: %w", ErrTimeout, c.timeout, err)
		}
	}
	err = &cacheError{op, err}
	if c.onError != nil {
		c.onError(ctx, err)
	}
	return err
}

// run sends, by the deadline or ctx's end: on the caller's goroutine when
// the client bounds socket reads by the context's deadline, else on one of
// the workers the Limiters use, which the caller stops waiting for at the
// deadline (see onWorker): past maxAbandoned of them still running, run
// fails at once with [ErrCircuitOpen].
func (c *Cache[T]) run(ctx context.Context, deadline time.Time, send func(context.Context) error) error {
	if !c.inline {
		_, err := onWorker(job{ctx: ctx, call: newCall(request{}, deadline, callQueued), abandoned: &c.abandoned, do: send})
		return err
	}
	// The deadline also bounds go-redis's pool waits, dials and retry
	// back-offs; a caller's earlier deadline wins.
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	return send(cctx)
}

// Get returns the value stored under key. A key that is not in Redis is a
// miss: the zero value, found == false and a nil error. Any other failure
// returns found == false and a non-nil error: [ErrEmptyKey] or
// [ErrKeyTooLong] for a bad key, one wrapping [ErrCacheDecode] when the
// stored value does not decode, [ErrTimeout] when Redis did not answer
// within the cache's timeout, or the Redis or context error.
func (c *Cache[T]) Get(ctx context.Context, key string) (v T, found bool, err error) {
	if err := c.check(key); err != nil {
		return v, false, err
	}
	raw, found, err := c.get(ctx, c.redisKey(key))
	if err != nil || !found {
		return v, false, err
	}
	v, err = c.decode(raw)
	if err != nil {
		return v, false, err
	}
	return v, true, nil
}

// get reads rkey.
func (c *Cache[T]) get(ctx context.Context, rkey string) (raw string, found bool, err error) {
	// Only this function's stack sees the results, and only when do
	// returns nil, once the send has ended.
	var r struct {
		raw   string
		found bool
	}
	err = c.do(ctx, "get", func(ctx context.Context) error {
		var err error
		r.raw, r.found, err = getResult(c.client.Get(ctx, rkey))
		return err
	})
	if err != nil {
		return "", false, err
	}
	return r.raw, r.found, nil
}

// Set stores v under key for ttl, jittered if [WithCacheJitter] is set. A
// bad key ([ErrEmptyKey], [ErrKeyTooLong]) or a ttl shorter than
// [MinCacheTTL] ([ErrCacheTTL]) returns an error and writes nothing.
func (c *Cache[T]) Set(ctx context.Context, key string, v T, ttl time.Duration) error {
	if err := c.check(key); err != nil {
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
	ttl = c.writeTTL(ttl)
	return c.do(ctx, "set", func(ctx context.Context) error {
		return c.client.Set(ctx, rkey, enc, ttl).Err()
	})
}

// Delete removes key. Deleting a key that is not in Redis is not an error;
// a bad key ([ErrEmptyKey], [ErrKeyTooLong]) is.
func (c *Cache[T]) Delete(ctx context.Context, key string) error {
	if err := c.check(key); err != nil {
		return err
	}
	rkey := c.redisKey(key)
	return c.do(ctx, "delete", func(ctx context.Context) error {
		return c.client.Del(ctx, rkey).Err()
	})
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
// caller gives up; its read and its write each wait for Redis no longer
// than the cache's timeout ([WithCacheTimeout]), and load should bound its
// own run time. Each caller waits no longer than its own context allows:
// one whose context ends (its deadline included) stops waiting and returns
// its context error, and the shared work still completes and fills the
// cache. Every caller gets its own copy of the value, decoded from its
// encoded form, so a loaded value reads exactly as a later [Cache.Get]
// would return it. A panic in load is not recovered.
//
// An error from load is returned unchanged and nothing is stored. A stored
// value that does not decode returns an error wrapping [ErrCacheDecode] and
// load is not called. A bad key ([ErrEmptyKey], [ErrKeyTooLong]), a ttl
// shorter than [MinCacheTTL] ([ErrCacheTTL]) or a nil load
// ([ErrCacheNilLoader]) returns an error before anything is sent.
//
// When Redis fails (or does not answer in time: [ErrTimeout]), GetOrLoad
// returns the Redis error, without calling load when the read failed,
// unless [WithCacheLoadOnError] is set: then a failed read runs load and
// returns its value without an attempt to store it, and a failed write
// returns the loaded value. Either way [WithCacheOnError] sees the error.
func (c *Cache[T]) GetOrLoad(ctx context.Context, key string, ttl time.Duration, load func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	if err := c.check(key); err != nil {
		return zero, err
	}
	if err := checkCacheTTL(ttl); err != nil {
		return zero, err
	}
	if load == nil {
		return zero, ErrCacheNilLoader
	}
	if err := ctx.Err(); err != nil {
		return zero, &cacheError{"get", err}
	}
	rkey := c.redisKey(key)
	shared := context.WithoutCancel(ctx)
	ch := c.loads.DoChan(rkey, func() (any, error) {
		return c.fill(shared, rkey, ttl, load)
	})
	select {
	case <-ctx.Done():
		return zero, &cacheError{"get", ctx.Err()}
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
	raw, found, err := c.get(ctx, rkey)
	if found {
		return raw, nil
	}
	readFailed := err != nil
	if readFailed && !c.loadOnError {
		return "", err
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
		if err := c.write(ctx, rkey, enc, ttl); err != nil && !c.loadOnError {
			return "", err
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
// Cluster, where MGET would fail across slots), waiting for them no longer
// than the cache's timeout. Keys that are missing are absent from the map;
// duplicate keys are fetched once each time they appear. Every key is
// checked before anything is sent: a bad one returns [ErrEmptyKey] or
// [ErrKeyTooLong]. On any error, including a value that does not decode
// ([ErrCacheDecode]), GetMany returns a nil map and the first error.
func (c *Cache[T]) GetMany(ctx context.Context, keys []string) (map[string]T, error) {
	if c == nil || c.client == nil {
		return nil, errCacheNotBuilt
	}
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return nil, err
		}
	}
	values := make(map[string]T, len(keys))
	if len(keys) == 0 {
		return values, nil
	}
	raws := make([]string, len(keys))
	found := make([]bool, len(keys))
	err := c.do(ctx, "get", func(ctx context.Context) error {
		pipe := c.client.Pipeline()
		cmds := make([]*redis.StringCmd, len(keys))
		for i, k := range keys {
			cmds[i] = pipe.Get(ctx, c.redisKey(k))
		}
		// Exec reports the first command's error, a miss's redis.Nil
		// included; each command carries its own error (a failed
		// connection sets it on all of them), so the replies are read one
		// by one instead.
		_, _ = pipe.Exec(ctx)
		for i, cmd := range cmds {
			raw, ok, err := getResult(cmd)
			if err != nil {
				return err
			}
			raws[i], found[i] = raw, ok
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, k := range keys {
		if !found[i] {
			continue
		}
		v, err := c.decode(raws[i])
		if err != nil {
			return nil, err
		}
		values[k] = v
	}
	return values, nil
}

// SetMany stores every value of items under its key for ttl (each write
// jittered on its own if [WithCacheJitter] is set), in one pipeline of SET
// commands, waiting for it no longer than the cache's timeout. Every key
// is checked and every value encoded before anything is written, so a bad
// key ([ErrEmptyKey], [ErrKeyTooLong]) or an encoding error writes nothing;
// the writes themselves are not atomic, and after a Redis error some of
// them may have been applied. A ttl shorter than [MinCacheTTL] returns
// [ErrCacheTTL].
func (c *Cache[T]) SetMany(ctx context.Context, items map[string]T, ttl time.Duration) error {
	if c == nil || c.client == nil {
		return errCacheNotBuilt
	}
	for k := range items {
		if err := checkKey(k); err != nil {
			return err
		}
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
		encoded[c.redisKey(k)] = enc
	}
	return c.do(ctx, "set", func(ctx context.Context) error {
		pipe := c.client.Pipeline()
		for rkey, enc := range encoded {
			pipe.Set(ctx, rkey, enc, c.writeTTL(ttl))
		}
		_, err := pipe.Exec(ctx)
		return err
	})
}
