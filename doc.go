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
//   - [FixedWindow](limit, window): a key's window opens at the first call it
//     admits and closes window later; at most limit units are admitted per
//     window. Cheapest; allows bursts of up to 2×limit across a window edge.
//   - [SlidingLog](limit, window): at most limit units are admitted in any
//     period of length window, exactly. State grows with limit.
//   - [TokenBucket](rate, per, burst): a bucket that starts full at burst
//     tokens and refills continuously at rate tokens every per, never above
//     burst. Smooth, constant state; the usual choice for APIs.
//   - [SlidingWindow](limit, window): the sliding window counter: the
//     current window's count plus the previous window's, weighted by how
//     much of it the sliding window still covers. Smooth and constant
//     state, like a token bucket, with a window's meaning; an estimate, so
//     a window-long interval can admit more than limit on skewed traffic
//     (see its documentation for the bound).
//   - [All](algs...): several limits on one key at once (10 a second and
//     1,000 an hour and 10,000 a day): a call is admitted only when every
//     part admits it, and then consumes from every part; a call any part
//     denies consumes from none. Still one script, one round trip,
//     atomic; [Result.Parts] has each part's result.
//
// # Guarantees
//
// Every algorithm keeps these:
//
//   - One decision is one script call: one EVALSHA in steady state, in a
//     round trip of its own or shared with concurrent decisions (see
//     Batching). When Redis does not have the script (after a restart,
//     a failover or SCRIPT FLUSH) the call is sent again as EVAL: an
//     extra round trip, never an error.
//   - At most once: a decision's script runs at most once in Redis, even
//     when its reply is lost (a read timeout, a connection closed after
//     the write). go-redis re-sends such a command by default (MaxRetries
//     3), which would charge one call several units; the limiter's
//     commands tell go-redis not to, and the caller gets the error
//     instead, which the failure policy handles.
//   - Atomic: reading the state, deciding, writing it and setting its TTL
//     happen inside one script. Every key a script writes gets a TTL in that
//     script, and a key found without one gets one. No key lives forever;
//     TTLs only collect garbage and decisions never depend on them. Each
//     TTL runs a second past the moment the key's state stops mattering,
//     so that no key expires while it still counts (Redis counts a TTL set
//     in a script from the script's start, in whole ms, which without a
//     margin can end a 1ms window's key early).
//   - A denied call consumes nothing, and [Limiter.AllowN] is all or nothing.
//     A cost above the capacity could never succeed: it returns
//     [ErrCostExceedsLimit] and sends nothing.
//   - Bad input (an empty key, a cost below 1, a limit, rate or burst below
//     1, a window under a millisecond) returns a sentinel error that
//     [errors.Is] matches, before anything is sent to Redis. Errors never
//     contain the user's key. A denial is a [Result], never an error.
//   - A malformed reply from a script is an error wrapping
//     [ErrMalformedReply], never a panic.
//
// # Time
//
// By default the scripts read Redis's clock (TIME, in microseconds), so app
// servers whose clocks disagree still agree on every decision. [WithClock]
// switches to the client's clock, passed to the script, for Redis services
// that refuse TIME in scripts and for deterministic tests. Either way, time
// going backwards never refills capacity, never panics and never produces a
// negative duration: state left in the future is treated as if it had been
// written now.
// Redis 5.0 or later is required (scripts that call TIME before writing).
//
// # Keys
//
// The Redis key for user key K is
//
//	prefix + name + ":{" + K + "}"
//
// where prefix is [DefaultPrefix] ("rl:") unless [WithPrefix] sets another
// and name is the algorithm's: "fw", "sl", "tb" or "sw". So a sliding log on key
// "203.0.113.7" lives at "rl:sl:{203.0.113.7}". A limiter on [All] keeps
// one key per part, prefix + "all:" + i + ":" + name + ":{" + K + "}" for
// the part at index i, such as "rl:all:0:tb:{203.0.113.7}" and
// "rl:all:1:fw:{203.0.113.7}": parts never share state, and all of them
// sit in K's Cluster slot (for a K that begins with '}', which would
// leave no hash tag, [All] says how the parts' keys are tagged instead). Two algorithms on the same
// user key never collide. The user key sits in a Redis Cluster hash tag, so
// it alone picks the key's slot. Any byte string of 1 to [MaxKeyLen] bytes
// is a valid key. Limiters with different parameters of the same algorithm
// share state when they share a prefix: give each its own [WithPrefix].
// With [WithHashedKeys], K is replaced by a keyed hash of it, 32 hex digits.
//
// # Batching
//
// Decisions made at the same time share round trips. Each Redis node (the
// slot's master on a cluster, the shard on a ring) has a queue. A decision
// that finds no send in flight to its node goes at once, alone, so a lone
// caller never waits for others; one that finds a send in flight joins the
// queue, and when that send ends, every queued decision (up to
// [WithBatchSize], 128 by default) goes out as one pipeline of EVALSHAs,
// each still deciding for itself. A slow node delays only its own
// decisions. Limiters that share a *redis.Client, *redis.ClusterClient or
// *redis.Ring (and a batch size) share the queues. Every decision keeps
// its own guarantees: its timeout counts from when it was made, including
// its time in the queue; one that gives up before it is sent is never
// sent; the breaker and the failure policy see its own outcome.
// WithBatchSize(1) turns batching off. Other [redis.Scripter]
// implementations, go-redis's AutoPipeliner among them, are not batched by
// the limiter.
//
// [Limiter.AllowMany] decides many keys in one pipeline: one round trip
// per node instead of one per key.
//
// [Limiter.Wait] blocks until a call is allowed, as x/time/rate's Wait
// does, across every process sharing the Redis: the waiters on one key in
// a process take turns, so a unit freeing up wakes one call to Redis.
//
// # Deny cache
//
// [WithDenyCache] keeps the last denial Redis gave for each key in process
// memory and answers calls on that key without Redis until one could
// succeed. A client that floods a key it has exhausted then costs no round
// trip. The cache only denies what Redis would deny, never admits, and
// stops no later than the denial in Redis does. Another process's Reset is
// seen at most the remaining RetryAfter later. For [All], a cached denial
// lasts until the first part that denied could admit the call, so that
// its [Result.Parts] stay true.
//
// # Redis Cluster
//
// Every decision touches one key, or for [All] one key per part, all in
// one slot, so a Limiter runs on a
// *redis.ClusterClient as it does on one node: no CROSSSLOT errors, and no
// script loading to do, as each node gets the script on its first call
// (EVALSHA, then EVAL on NOSCRIPT), a newly promoted replica included.
//
// A key's slot is CRC16 of the text between the first '{' of the Redis key
// and the next '}': the user key K (or its part before a '}' it holds). So
// every limiter on the same user key, whatever its algorithm or prefix,
// lands on the same slot and shard (but for a K that begins with '}',
// which gives no hash tag: Redis then hashes the whole key), and different user keys spread over
// the shards. To keep limits on one shard on purpose, give them the same
// user key under different prefixes.
//
// Where user keys come from clients, an attacker can choose keys that share
// a slot (CRC16 is no secret) and pile the load of many keys onto one
// shard; [WithHashedKeys] with a secret stops that, and bounds the memory a
// long key costs.
//
// Replication in Redis is asynchronous: when a master fails, the writes of
// its last moments may not have reached the replica that replaces it, so a
// key on that shard may admit those few calls again. While a slot has no
// master, calls on it fail and follow [WithFailurePolicy]. go-redis learns
// of the new master from a MOVED reply or a periodic reload of its slot
// map; a killed master sends no MOVED, so set
// redis.ClusterOptions.ClusterStateReloadInterval to a second or less, or
// decisions on that shard keep failing until the default 60 s reload.
//
// # Writing an algorithm
//
// Implement [Algorithm] in any package and pass it to [New]; the Limiter
// does the rest. The simplest way, and the only one that lets the
// algorithm take part in [All], is to also implement [Composable]: its
// Body is Lua source that defines a local function decide, and the
// Limiter assembles the script around it (Script may then return nil):
//
//	local function write(consume, key, now, n, ...)
//	  -- consume: true to consume n (only ever when decide allowed the
//	  -- call, and within All when every part allowed it); otherwise
//	  -- write only repairs (state the clock left in the future, a
//	  -- missing TTL). ...: the values decide returned after write.
//	  -- Give every write a TTL, in ms: math.ceil(us / 1000) + ttl_margin
//	  -- for state that matters for us more µs.
//	  return remaining, retry_after_us, reset_after_us
//	end
//
//	local function decide(key, now, n, ...)
//	  -- key: the Redis key; now: µs since the Unix epoch (a number);
//	  -- n: the cost, from 1 to Limit() (in All, to the smallest part's
//	  -- Limit); ...: the values Args returned, as strings. Read key's
//	  -- state and decide; write nothing.
//	  local allowed = ... -- a boolean: true or false, never 0 or 1
//	  return allowed, write, ... -- and up to 10 values for write
//	end
//
// decide may also drop state that no longer counts. The three numbers
// are integers, none negative: retry_after 0 exactly when allowed, and
// durations at most [MaxWindow]; remaining and the durations are what the
// key holds after the write. The body must touch no key but key, and
// define no global. The script reads the time once (Redis TIME, or the
// [WithClock] time) and passes it to every body, so the parts of an All
// decide at one instant. write may be any function, a closure made in
// decide too; a function of the body's own that takes its state as
// arguments, as the package's bodies do, costs Redis the least.
// Example_customAlgorithm writes a daily quota this way.
//
// An algorithm that is not Composable gives its whole script instead,
// called as
//
//	KEYS[1]  the Redis key, built as above with the algorithm's Name
//	ARGV[1]  now in µs since the Unix epoch as a decimal integer, or "" when
//	         the script must read Redis TIME
//	ARGV[2]  the cost n, an integer from 1 to Limit()
//	ARGV[3]  "1" to consume n when allowed, "0" to only report ([Limiter.Peek])
//	ARGV[4…] the values returned by Args
//
// and must reply with an array of four integers:
//
//	{allowed (1 or 0), remaining units, retry_after µs, reset_after µs}
//
// with the same rules, touching no key but KEYS[1], setting a TTL on it
// whenever it writes it, and never consuming when ARGV[3] is "0". [All]
// refuses such an algorithm with [ErrInvalidConfig].
//
// Either way, Lua numbers are doubles: keep times in integer µs, and
// format large numbers with string.format("%d", x), never with tostring or
// "..", which keep only 14 digits. To decide in process memory too
// ([NewLocal], [FailLocal]), implement [LocalAlgorithm].
//
// Each of the package's own algorithms lives in one Go file (its
// constructor, its [Algorithm], [Composable] and [LocalAlgorithm]
// methods, and its in-process state, a mirror of its body) and one body in
// scripts/, embedded by that file; the tests run every algorithm of one
// table through the conformance suite, the fuzz targets and the
// in-process comparison, so a new one needs a row there.
//
// # When Redis fails
//
// A decision waits for Redis at most the limiter's timeout: [WithTimeout],
// [DefaultTimeout] (500ms) unless set. It is counted from when the call
// starts and covers its time in a batch's queue, go-redis's pool waits,
// dials and the EVAL after a NOSCRIPT. The bound also holds on clients
// built with default options, where go-redis lets a stalled socket read
// run for its ReadTimeout (3s) whatever the context says: there the call
// runs on a shared worker goroutine (a batch, on a goroutine of its own),
// the decision stops waiting at the timeout, and the worker ends by
// itself once go-redis's own read timeout has passed. At most 128 such
// abandoned calls per limiter may be pending; beyond that, decisions go
// straight to the policy, so goroutines do not pile up during an outage.
// On a *redis.Client, *redis.ClusterClient or *redis.Ring with
// ContextTimeoutEnabled, a lone call runs on the caller's goroutine under
// the deadline, which saves the hand-off to a worker (two goroutine
// wake-ups a call): set it where latency matters. (go-redis's
// Client.WithTimeout would bound reads without it, but its copy drops the
// client's hooks, tracing among them, so the limiter does not use it.)
// go-redis does not retry the limiter's commands (see Guarantees), so a
// lost reply is an error within the timeout, never a second charge. A
// call given up on may still run in Redis and consume: a key is charged
// more, never less, so the limit still holds. Other [redis.Scripter]
// implementations get the script through [redis.Script.Run], which
// go-redis may re-send after a lost reply; go-redis's AutoPipeliner is
// not one of them.
//
// A circuit breaker keeps an outage from costing a timeout per decision:
// after 5 failed calls in a row, with no call succeeding since the last of
// them started, decisions go straight to the policy without touching the
// network ([ErrCircuitOpen]) for 500ms; then one
// probe call goes to Redis, and its success closes the breaker (its failure
// opens it for another 500ms). Redis answering about one call (an error
// reply such as WRONGTYPE, or a reply that breaks the script contract) is
// not a failure of Redis and does not count.
//
// What a decision returns when Redis fails (an error from the connection or
// the pool, [ErrTimeout], [ErrCircuitOpen], an error reply, a malformed
// reply) is set by [WithFailurePolicy]:
//
//	policy      Allow returns                                   within
//	FailError   the zero Result and the error (the default)     the timeout
//	FailOpen    Allowed, Remaining = Limit, Degraded; no error  the timeout
//	FailClosed  denied, RetryAfter 500ms, Degraded; no error    the timeout
//	FailLocal   the in-process decision, Degraded; no error     the timeout
//
// and, while the breaker is open, at once. [Limiter.Peek] follows the same
// policy; [Limiter.Reset] always returns its error. A decision the policy
// made has [Result.Degraded] set, and every Redis error, whether the policy
// covers it or not, goes to the function set with [WithOnError] (a
// log/slog call fits) before the decision returns. The policy never covers
// bad input ([ErrEmptyKey], [ErrInvalidCost], [ErrCostExceedsLimit], …),
// which is always returned, nor a caller's context that was cancelled or
// passed its deadline: the context's error is returned, wrapped, and
// OnError is not called.
//
// [FailLocal] decides with the same algorithm in this process's memory, with
// the capacity divided by [WithLocalInstances] (the number of processes
// sharing the limit, 1 by default) so that the processes together stay near
// the limit. Local state starts empty at the first failure: units consumed
// in Redis before it are not known locally. A cost above the local share is
// denied with RetryAfter of a full period. [NewLocal] gives the in-process
// limiter on its own, without Redis. An algorithm defined elsewhere takes
// part by implementing [LocalAlgorithm].
//
// Recovery needs nothing from the caller: once Redis answers a probe,
// decisions come from Redis again. After a restart, a failover or a
// SCRIPT FLUSH the calls that get NOSCRIPT are sent again as EVAL, which
// also loads the script on that node, costing one extra round trip, never
// an error, in batches too. [New] never contacts Redis, so a limiter can
// be built while Redis is down; scripts are not preloaded.
//
// # HTTP and metrics
//
// Package [github.com/redislimit/redislimit/httplimit] is net/http
// middleware on a Limiter, with the IETF RateLimit header fields; it reads
// [Limiter.Quotas] for them. [WithObserver] receives every decision, for
// metrics; the module github.com/redislimit/redislimit/extra/redislimitotel
// records them with OpenTelemetry.
//
// # Concurrency
//
// A [Limiter] is safe for concurrent use by multiple goroutines, and any
// number of Limiters in any number of processes may share keys.
package redislimit
