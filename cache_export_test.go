package redislimit

// CacheJitterTTL exposes the TTL jitter of a Cache, with its random draw r
// in [0, 1) as a parameter.
var CacheJitterTTL = jitterTTL

// CacheAbandoned returns how many of c's timed-out calls still wait for
// Redis.
func CacheAbandoned[T any](c *Cache[T]) int { return int(c.abandoned.Load()) }
