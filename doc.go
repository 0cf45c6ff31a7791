// Package redislimit limits the rate of calls per key, with the state in
// Redis, so that every process sharing a Redis shares the limit.
//
//	lim, err := redislimit.New(rdb, redislimit.SlidingLog(100, time.Minute))
//	...
//	res, err := lim.Allow(ctx, clientIP)
//	if err != nil {
//		// Redis failed or the input was bad: not a decision.
//	}
//	if !res.Allowed {
//		// Denied: retry in res.RetryAfter.
//	}
//
// # Algorithms
//
//   - [FixedWindow]: at most limit units per window, which opens at a key's
//     first admitted call. Cheapest; bursts of up to 2×limit across a
//     window edge.
//   - [SlidingLog]: at most limit units in any period of length window,
//     exactly. State grows with limit.
//   - [SlidingWindow]: the sliding window counter, an estimate with a
//     window's meaning and constant state.
//   - [TokenBucket]: a bucket of burst tokens refilling at rate per period.
//     Smooth, constant state; the usual choice for APIs.
//   - [CalendarQuota]: at most limit units per calendar hour, day, week or
//     month of a time zone, reset at the period's start (local midnight
//     for days, across DST changes); quotas as billing plans state them.
//   - [All]: several limits on one key at once (10 a second and 10,000 a
//     day), in one script; a call is admitted only when every part admits
//     it, and a denied call consumes from none.
//
// # Writing an algorithm
//
// Built-in or not, an algorithm is one contract, [Algorithm]: a Lua body
// ([Algorithm.Body], which states what the body must do) and the
// arguments it takes ([Algorithm.Args], whose length is their number).
// Implement it in any package and pass it to [New]: the Limiter
// assembles the script from the body and gives it keys, validation, the
// time source, reply checking, batching, the failure policies, the deny
// cache and a part in [All]. A Window method lets [Limiter.Quotas] report
// its span, and [LocalAlgorithm] lets it decide in process memory.
// Example (CustomAlgorithm) writes a daily quota this way and runs it
// alone and inside All.
//
// # Guarantees
//
//   - One decision is one script call, atomic: reading the state, deciding,
//     writing it and setting its TTL happen in one EVALSHA (EVAL when Redis
//     lacks the script, after a restart or SCRIPT FLUSH: an extra round
//     trip, never an error).
//   - At most once: a decision's script runs at most once in Redis, even
//     when its reply is lost; go-redis is told not to re-send it.
//   - Every key written gets a TTL in the same script, [TTLMargin]
//     past the moment its state stops mattering; decisions never depend on
//     a TTL.
//   - A denied call consumes nothing; [Limiter.AllowN] is all or nothing.
//   - A denial is a [Result], never an error. Bad input returns a sentinel
//     error ([ErrEmptyKey], [ErrInvalidCost], …) before anything is sent,
//     and errors never contain the user's key. A reply that breaks the
//     script contract is [ErrMalformedReply], never a panic.
//
// # Time
//
// By default the scripts read Redis's clock (TIME), so app servers whose
// clocks disagree still agree on every decision. [WithClock] passes the
// client's clock instead, for Redis services that refuse TIME in scripts
// and for tests. Time going backwards never refills capacity, never panics
// and never gives a negative duration.
//
// # Keys
//
// This is the one place that states the key layout. The Redis key for user
// key K is
//
//	prefix + name + ":{" + K + "}"
//
// where prefix is [DefaultPrefix] unless [WithPrefix] sets another, and
// name is the algorithm's [Algorithm.Name]: a [TokenBucket] on key
// "203.0.113.7" lives at "rl:tb:{203.0.113.7}". [All] keeps one key per
// part, prefix + "all:" + i + ":" + name + ":{" + K + "}" for the part at
// index i. With [WithHashedKeys], K is replaced by a keyed hash of it, 32
// hex digits. Any byte string of 1 to [MaxKeyLen] bytes is a valid key.
//
// K is a Redis Cluster hash tag, so every key of one user key, whatever
// the algorithm, sits in one slot. (For a K that begins with '}', which
// would leave no hash tag, the keys of an All's parts are prefix + "all:" +
// i + ":" + name + ":#{" + H + "}" + K instead, H the first 32 hex digits
// of K's SHA-256, so that they still share a slot.) Two algorithms of
// different names on one user key never share state; limiters of the same
// algorithm and prefix do, whatever their parameters, which is what lets
// a key keep its usage when its limit changes (see Plans and per-tenant
// limits).
//
// # Plans and per-tenant limits
//
// A limit that depends on who calls (a free and a pro plan, or a limit
// per tenant read from a database) is a Limiter derived per call with
// [Limiter.Using]: it shares everything but the algorithm with its parent,
// costs tens of nanoseconds for parameters it has seen, and reads the
// same Redis key for every algorithm of one kind. A key's usage so carries
// over when its limit changes, as each algorithm's documentation states:
// a token bucket keeps the units in use, capped at the new burst; windows
// keep their counts, judged by the new limit. An algorithm of another
// kind, or All's parts in other positions, have keys of their own. The
// deny cache reuses a denial only under the parameters that gave it.
//
// # In-flight limits
//
// [Concurrency] bounds how many calls per key run at once, rather than
// how many start per period: [Concurrency.Acquire] takes a [Lease] when
// fewer than the limit are held, [Lease.Release] gives it back, and a
// lease not released ends ttl after it was taken or last extended
// ([Lease.Extend]), so the slot of a process that crashed comes back by
// itself. Its Redis key is prefix + "cc:{" + K + "}", a sorted set of
// lease tokens scored by expiry; each call is one script call.
//
// # Costs known after the work
//
// [Limiter.Debit] charges units for work already done, even past the
// limit: the key then denies until it has recovered the debt.
// [Limiter.Refund] gives units back, never above the capacity. Reserve an
// estimate with [Limiter.AllowN], then settle with one or the other (an
// LLM call charged by its tokens). Each is one script call, atomic across
// the parts of an [All], and answers as [Limiter.Peek] would after it.
//
// # Shadow mode
//
// [WithShadowMode] puts a new limit on trial: a call it denies is
// admitted, marked [Result.Shadowed], consumes nothing, and is reported to
// the [Observer] as the [Shadowed] outcome.
//
// # Hot keys
//
// Every decision on one key goes to the Redis node that owns it, so a
// key that a whole fleet hits (a partner's global limit, a popular
// tenant, an attack on one endpoint) is bounded by one node, whatever the
// cluster's size. [WithLeases] takes units of such a key from Redis in
// one script call and admits calls from them in process memory:
//
//   - Never over the limit. Every unit admitted from a lease was consumed
//     in Redis first, so the processes sharing a Redis admit together no
//     more than one Redis would. Over time a token bucket admits at most
//     burst + rate × elapsed, counted from its first unit; within a
//     shorter interval it can run ahead by the units leased before the
//     interval and spent in it (at most maxUnits per process), as a
//     [SlidingWindow] or [SlidingLog] can within one of its windows. A
//     lease of a [FixedWindow] or [CalendarQuota] ends with the window or
//     period it was taken in, so each is exact.
//   - Unused units go back. When a lease ends (at maxAge, when it is
//     replaced, or at [Limiter.ReturnLeases]) its unused units are given
//     back in one script call, while that leaves the key as if they had
//     never been taken, which the script checks by its own clock: to a
//     window while the window they were taken in is current; to a
//     [TokenBucket] while, without them, it would not be full yet (a full
//     bucket forgets time, and a later refund would free units that
//     others took since). Past that, they are dropped. A [SlidingLog] and
//     algorithms defined outside the package cannot give units back
//     exactly; a lease of such an algorithm lasts maxAge, so within a
//     window it can run ahead as a sliding log does. A give-back that
//     fails goes to OnError.
//   - Bounded under-admission: a process holds at most maxUnits unused
//     units of a key, for at most maxAge. Units that cannot go back count
//     only as long as the state they were taken from counts them: a
//     bucket refills them at its rate, a window forgets them when it
//     ends, a sliding log when they leave its window.
//   - Adaptive. Each key's rate is measured in each process over spans of
//     100 ms (or maxAge, if shorter). A lease takes the decisions that
//     rate makes in half of maxAge, at most maxUnits; a key whose lease
//     would hold fewer than two calls decides in Redis, exactly as without
//     leases, so a key that cools down goes back to exact decisions.
//     Concurrent callers on a key share one lease request, and the
//     request takes what every part of the algorithm has left, from the
//     caller's cost up to that size: a key near its limit hands out its
//     last units.
//
// A lease is one of the script's modes, so it works for every algorithm,
// [All] (a unit is taken from every part), [Limiter.Using] (each derived
// Limiter leases under its own parameters), the deny cache (a denied
// lease request feeds it) and shadow mode. When Redis fails, a lease
// already held admits until it ends; a lease request that fails leaves
// each waiting call to the failure policy. [Limiter.Peek], Debit and
// Refund always go to Redis; [Limiter.AllowMany] admits from a lease that
// has units but never asks for one. [Limiter.Reset] ends the leases of the
// key that the limiter and those derived from it hold, and drops a lease
// request in flight. Two things are beyond a process's sight: a Reset
// made by another process, and a change of a key's window by other
// parameters (another plan through Using, or another process's
// configuration). Leases held elsewhere then admit until they end, and
// may give their units back into the key's new state: up to maxUnits per
// process and key, once. A lease of a [SlidingLog] writes one entry per
// unit, as AllowN of its size does: keep its maxUnits small. A decision
// from a lease costs an atomic operation and a clock read, and allocates
// nothing but, for an [All], its Parts. The section "Hot keys" of the
// README has the figures.
//
// # Batching
//
// Decisions made at the same time on a *redis.Client,
// *redis.ClusterClient or *redis.Ring share round trips: a decision that
// finds no send in flight to its Redis node goes at once, alone; one that
// finds one waits for it and then goes with every decision queued
// meanwhile, as one pipeline ([WithBatchSize]). Each keeps its own
// timeout, failure policy and error. [Limiter.AllowMany] decides many keys
// in one round trip per node. [Limiter.Wait] blocks until a call is
// allowed. [WithDenyCache] answers calls on a key Redis just denied
// without Redis, until one could succeed.
//
// # Redis Cluster
//
// Every decision touches one slot, so a Limiter runs on a
// *redis.ClusterClient as on one node: no CROSSSLOT errors, no scripts to
// load by hand. Where user keys come from clients, use [WithHashedKeys]
// so that nobody can pick keys that pile onto one shard. Replication is
// asynchronous: a failover can forget a master's last writes, so a key
// may admit those few calls again. Set
// redis.ClusterOptions.ClusterStateReloadInterval to a second or less, so
// that go-redis finds a new master quickly after a master dies.
//
// # When Redis fails
//
// A decision waits for Redis at most [WithTimeout] ([DefaultTimeout]
// unless set), on every client, including clients with default options
// whose socket reads ignore context deadlines. A circuit breaker sends
// decisions straight to the policy, without touching the network, while
// Redis is down ([ErrCircuitOpen]). What a decision returns then is set by
// [WithFailurePolicy]:
//
//	policy      Allow returns
//	FailError   the zero Result and the error (the default)
//	FailOpen    Allowed, Remaining = Limit, Degraded; no error
//	FailClosed  denied, Degraded; no error
//	FailLocal   the in-process decision, Degraded; no error
//
// Every Redis error goes to [WithOnError] (a log/slog call fits). The
// policy never covers bad input, nor a caller's context that ended.
// [NewLocal] gives the in-process limiter on its own, without Redis.
//
// # HTTP, metrics and caching
//
// Package [github.com/redislimit/redislimit/httplimit] is net/http
// middleware with the IETF RateLimit header fields. [WithObserver]
// receives every decision, for metrics; the module
// github.com/redislimit/redislimit/extra/redislimitotel records them with
// OpenTelemetry. [Cache] is a typed cache on the same client, with the
// Limiter's conventions: a miss is not an error, an outage is.
//
// # Errors and configuration
//
// Configuration is checked at construction: [New], [NewLocal] and
// [NewCache] return an error wrapping [ErrInvalidConfig] (the module's one
// configuration sentinel), never a value that fails later. Match errors
// with [errors.Is].
//
// # Concurrency
//
// A [Limiter] is safe for concurrent use by multiple goroutines, and any
// number of Limiters in any number of processes may share keys.
package redislimit
