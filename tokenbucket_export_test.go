package redislimit

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
