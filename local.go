package redislimit

import (
	"hash/maphash"
	"sync"
	"time"
)

// MaxLocalKeys is the most keys an in-process limiter ([NewLocal], or the
// fallback of [FailLocal]) keeps in memory. Keys whose state has expired
// are swept as new keys arrive; past MaxLocalKeys live keys, arbitrary keys
// are forgotten to make room, and start again with full capacity.
const MaxLocalKeys = 1 << 17

// LocalAlgorithm is an [Algorithm] that can also decide in process memory,
// for [NewLocal] and the [FailLocal] policy. [FixedWindow], [SlidingLog],
// [SlidingWindow], [TokenBucket], [CalendarQuota] and [All] (when all its parts do)
// implement it. An algorithm defined elsewhere may implement
// it too; without it, [NewLocal] and [FailLocal] refuse the algorithm with
// [ErrInvalidConfig].
type LocalAlgorithm interface {
	Algorithm
	// NewLocalState returns the state of a key with nothing recorded, for
	// the algorithm with its capacity divided among instances (at least 1)
	// processes: Limit()/instances units, rounded down and at least 1, and
	// rates divided likewise. Every call with the same instances must
	// return an equivalent state.
	NewLocalState(instances int) LocalState
}

// LocalState is one key's state of a [LocalAlgorithm] in process memory.
// The limiter serialises the calls on one state, so it needs no lock.
type LocalState interface {
	// Decide makes one decision at now (µs since the Unix epoch) for cost
	// n, from 1 to the state's capacity, consuming n units if the call is
	// allowed and consume is set. It returns what the algorithm's script
	// would reply for a key holding this state, as a [Result] whose Limit
	// and Degraded the limiter fills in. Time may go backwards between
	// calls; the state must then neither refill nor report durations past
	// its period.
	Decide(now int64, n int, consume bool) Result
	// ExpiresAt returns the time (µs since the Unix epoch) from which the
	// state says nothing more than a fresh one: where the script's key
	// would expire. The limiter drops the state then, and does not keep a
	// state that has expired right after Decide (the script would not have
	// written it).
	ExpiresAt() int64
}

// A carrier is a [LocalState] that can take over the usage recorded in a
// state of the same kind of algorithm (the same Name) with other
// parameters, the way the algorithm's body reads a key written under other
// parameters: what [Limiter.Using] promises when a key's limit changes.
// States without it start afresh when their parameters change.
type carrier interface {
	LocalState
	// carry makes the state, fresh from NewLocalState, hold the usage
	// recorded in from at now (µs since the Unix epoch). A from of another
	// type leaves the state fresh.
	carry(from LocalState, now int64)
}

// An adjuster is a [LocalState] that [Limiter.Debit] and [Limiter.Refund]
// can change in process memory.
type adjuster interface {
	LocalState
	// adjust charges n units at now (µs since the Unix epoch) when n > 0,
	// past the capacity if need be, within the algorithm's bound on debt
	// (see Debit); when n < 0 it gives -n units back, never beyond
	// empty usage. It does what the algorithm's body does to its key
	// in the modes Debit and Refund, and reports false, changing
	// nothing, when it cannot (a part of an All that is no adjuster).
	adjust(now, n int64) bool
}

// NewLocal returns a Limiter that runs alg in this process's memory, with
// no Redis: for single-process services, for tests, and as a building
// block. Its [Result] values mean what they mean with Redis, Degraded is
// never set, and its calls never fail except for bad input or an ended
// context. State is lost with the process and not shared with other
// processes; [WithLocalInstances] divides the capacity for a limit shared
// by a known number of processes. At most [MaxLocalKeys] keys are kept.
//
// alg must implement [LocalAlgorithm]; otherwise, or when alg or an option
// is invalid, NewLocal returns [ErrNilAlgorithm] or an error wrapping
// [ErrInvalidConfig]. [WithClock] sets the clock (default time.Now);
// [WithPrefix], [WithHashedKeys], [WithTimeout], [WithFailurePolicy],
// [WithOnError], [WithBatchSize] and [WithDenyCache] have no effect,
// though their values are still checked.
// [Result.Limit] and the largest cost are the divided capacity.
func NewLocal(alg Algorithm, opts ...Option) (*Limiter, error) {
	return build(nil, alg, opts)
}

// localUnits is the capacity of a process among instances sharing limit.
func localUnits(limit, instances int) int64 {
	return int64(max(1, limit/instances))
}

func micros(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

// localShards spreads keys over locks, so that goroutines deciding on
// different keys rarely wait for each other.
const localShards = 32

// sweepEvery is how often, in µs of the limiter's clock, a shard drops
// expired states when a new key arrives.
const sweepEvery = int64(time.Second / time.Microsecond)

// expirer is a per-key state that says nothing more from a moment on.
type expirer interface {
	// ExpiresAt returns that moment, in µs since the Unix epoch.
	ExpiresAt() int64
}

// keyStore is a sharded map from keys to states, holding at most a fixed
// number of them: states that expired are swept as new keys arrive, and
// past the bound arbitrary keys are forgotten to make room. Its methods
// are safe for concurrent use.
type keyStore[S expirer] struct {
	seed     maphash.Seed
	shardMax int // states per shard
	shards   []keyShard[S]
}

type keyShard[S expirer] struct {
	mu        sync.Mutex
	m         map[string]S // guarded by mu
	nextSweep int64        // guarded by mu
}

// init makes s hold at most max states (max >= 1).
func (s *keyStore[S]) init(max int) {
	n := min(localShards, max)
	s.seed, s.shardMax = maphash.MakeSeed(), max/n
	s.shards = make([]keyShard[S], n)
	for i := range s.shards {
		s.shards[i].m = make(map[string]S)
	}
}

// shard returns key's shard, locked.
func (s *keyStore[S]) shard(key string) *keyShard[S] {
	sh := &s.shards[maphash.String(s.seed, key)%uint64(len(s.shards))]
	sh.mu.Lock()
	return sh
}

// delete drops key's state.
func (s *keyStore[S]) delete(key string) {
	sh := s.shard(key)
	delete(sh.m, key)
	sh.mu.Unlock()
}

// len returns the number of states kept.
func (s *keyStore[S]) len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// put stores st as key's state at now (µs), first sweeping expired states
// at most once every sweepEvery, and forgetting an arbitrary key when the
// shard is full. sh.mu must be held.
func (sh *keyShard[S]) put(key string, st S, now int64, max int) {
	if _, ok := sh.m[key]; ok {
		sh.m[key] = st
		return
	}
	if now >= sh.nextSweep {
		for k, v := range sh.m {
			if v.ExpiresAt() <= now {
				delete(sh.m, k)
			}
		}
		sh.nextSweep = now + sweepEvery
	}
	if len(sh.m) >= max {
		for k := range sh.m {
			delete(sh.m, k)
			break
		}
	}
	sh.m[key] = st
}

// localStore holds the states of the in-process limiters of one kind of
// algorithm (one Name) in a family: one state per key, with the
// parameters it was last decided with. Its methods are safe for concurrent
// use.
type localStore struct {
	keyStore[localEntry]
}

// localEntry is a key's state, and the identity of the parameters that
// made it (a Limiter's params).
type localEntry struct {
	st     LocalState
	params any
}

// ExpiresAt implements expirer.
func (e localEntry) ExpiresAt() int64 { return e.st.ExpiresAt() }

func newLocalStore() *localStore {
	s := &localStore{}
	s.init(MaxLocalKeys)
	return s
}

// decide runs one decision on key's state at now (µs) with alg, whose
// parameters are params, divided among instances.
func (s *localStore) decide(key string, alg LocalAlgorithm, params any, instances int, now int64, n int, consume bool) Result {
	r, _ := s.update(key, alg, params, instances, now, func(st LocalState) (Result, bool) {
		return st.Decide(now, n, consume), true
	})
	return r
}

// adjust debits (delta > 0) or refunds (delta < 0) key's state at now
// (µs), and returns what Decide(now, 1, false) returns after; false when
// the state is not an adjuster.
func (s *localStore) adjust(key string, alg LocalAlgorithm, params any, instances int, now, delta int64) (Result, bool) {
	return s.update(key, alg, params, instances, now, func(st LocalState) (Result, bool) {
		a, ok := st.(adjuster)
		if !ok || !a.adjust(now, delta) {
			return Result{}, false
		}
		return st.Decide(now, 1, false), true
	})
}

// update runs f on key's state at now (µs) with alg, whose parameters are
// params, divided among instances, and keeps the state unless it has
// expired. A state made under other parameters hands its usage to a
// fresh one when that is a carrier.
func (s *localStore) update(key string, alg LocalAlgorithm, params any, instances int, now int64, f func(LocalState) (Result, bool)) (Result, bool) {
	sh := s.shard(key)
	defer sh.mu.Unlock()
	e, stored := sh.m[key]
	switch {
	case !stored || e.st.ExpiresAt() <= now:
		e = localEntry{alg.NewLocalState(instances), params}
	case e.params != params:
		st := alg.NewLocalState(instances)
		if c, ok := st.(carrier); ok {
			c.carry(e.st, now)
		}
		e = localEntry{st, params}
	}
	r, ok := f(e.st)
	switch {
	case !ok:
	case e.st.ExpiresAt() <= now:
		if stored {
			delete(sh.m, key)
		}
	default:
		sh.put(key, e, now, s.shardMax)
	}
	return r, ok
}
