package redislimit

// CacheJitterTTL exposes the TTL jitter of a Cache, with its random draw r
// in [0, 1) as a parameter.
var CacheJitterTTL = jitterTTL
