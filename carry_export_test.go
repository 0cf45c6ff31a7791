package redislimit

// CarryLocal returns a state of alg that holds the usage recorded in from
// at now (µs since the Unix epoch), as a key's in-process state passes to
// other parameters: a fresh state when alg's states are no carriers or
// from is nil.
func CarryLocal(alg LocalAlgorithm, from LocalState, now int64) LocalState {
	st := alg.NewLocalState(1)
	if c, ok := st.(carrier); ok && from != nil {
		c.carry(from, now)
	}
	return st
}
