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

// Carry makes to, fresh from NewLocalState, take over the usage recorded
// in from at now (µs), as the in-process store does when a key's
// parameters change. It reports false when to cannot carry usage.
func Carry(to, from LocalState, now int64) bool {
	c, ok := to.(carrier)
	if ok {
		c.carry(from, now)
	}
	return ok
}

// CarryLocal returns a state of alg that holds the usage recorded in from
// at now (µs since the Unix epoch), as a key's in-process state passes to
// other parameters: a fresh state when alg's states are no carriers or
// from is nil.
func CarryLocal(alg LocalAlgorithm, from LocalState, now int64) LocalState {
	st := alg.NewLocalState(1)
	if from != nil {
		Carry(st, from, now)
	}
	return st
}

// PeriodArgs returns the arguments that l, on a [CalendarQuota] or an All
// with one, sends for a client whose clock reads now (µs).
func PeriodArgs(l *Limiter, now int64) []any { return l.periods.at(now) }
