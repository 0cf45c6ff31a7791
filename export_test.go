package redislimit

// RedisKey exposes the Redis key a Limiter uses for a user key.
func RedisKey(l *Limiter, key string) string { return l.redisKey(key) }

// ParseReply exposes the reply parser.
var ParseReply = parseReply

// DenyKeys returns how many keys l's deny cache holds.
func DenyKeys(l *Limiter) int { return l.denials.len() }

// MaxInflight is how many sends a batching lane keeps in flight.
var MaxInflight = maxInflight

// RedisKeys exposes the Redis keys of an All limiter's parts.
func RedisKeys(l *Limiter, key string) []string { return l.redisKeys(key) }
