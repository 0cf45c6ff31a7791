package redislimit

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

//go:embed scripts/concurrency.lua
var concurrencyLua string

// concurrencyProgram takes, releases and extends leases; the script reads
// the TTL margin, in ms, from the line put before it.
var concurrencyProgram = newProgram("local ttl_margin = " + strconv.FormatInt(TTLMargin.Milliseconds(), 10) + "\n" + concurrencyLua)

// Modes of the concurrency script, its ARGV[2].
const (
	leaseAcquire = "a"
	leaseExtend  = "e"
	leaseRelease = "r"
)

// Names of a Concurrency's keys and errors.
const (
	concurrencyName  = "cc"
	concurrencyTitle = "Concurrency"
)

// ErrLeaseLost is returned by [Lease.Extend] when the lease is no longer
// held: it was released, or it expired before the extension reached
// Redis, and its slot may be another's. Extend does not take the slot
// back; the holder should stop the work it guarded, or acquire again.
var ErrLeaseLost = errors.New("redislimit: lease lost")

// errConcurrencyNotBuilt is returned by the methods of a Concurrency that
// [NewConcurrency] did not build, such as the zero Concurrency.
var errConcurrencyNotBuilt = fmt.Errorf("%w: a Concurrency must be built with NewConcurrency", ErrInvalidConfig)

// Concurrency limits how many calls per key are in flight at once: at
// most limit leases are held on a key at any moment, by every process
// sharing the Redis. A lease is taken with [Concurrency.Acquire] and ends
// when it is released ([Lease.Release]) or ttl after it was taken or last
// extended ([Lease.Extend]), so that the slot of a holder that crashed
// comes back by itself. Each call is one atomic script call: one round
// trip to take a lease and one to release it.
//
// A Concurrency is safe for concurrent use by multiple goroutines.
type Concurrency struct {
	// l carries the options and everything they set up: the key layout,
	// the sender (timeout, batching, circuit breaker), the failure policy,
	// OnError, the observer and the clock. It decides nothing itself.
	l         *Limiter
	limit     int
	ttl       time.Duration
	ttlMicros int64

	local      *leaseStore // FailLocal's leases in process memory; nil otherwise
	localLimit int         // the limit divided by WithLocalInstances
}

// NewConcurrency returns a Concurrency that lets at most limit leases be
// held at once per key on c, each lasting ttl unless extended or released.
// Any [redis.Scripter] works, as for [New]. It returns [ErrNilClient], or
// an error wrapping [ErrInvalidConfig] when limit is below 1 or above
// 2^50, ttl is under a millisecond or over [MaxWindow], or an option is
// invalid. It does not contact Redis.
//
// Choose ttl longer than the work usually takes, or extend the lease
// while the work runs (every ttl/3, say): ttl bounds how long the slot of
// a holder that crashed stays taken.
//
// The Limiter's options apply as they do to a Limiter: [WithPrefix] and
// [WithHashedKeys] (the Redis key of user key K is prefix + "cc:{" + K +
// "}"), [WithTimeout], [WithBatchSize], [WithOnError], [WithObserver]
// (each Acquire is one decision, of Algorithm "cc"; Release and Extend are
// not reported), [WithClock] (the time the script uses; expiries are kept
// in that time) and [WithFailurePolicy], with [WithLocalInstances] for
// [FailLocal]. When Redis fails, Acquire follows the policy: [FailError]
// returns the error; [FailOpen] admits with a lease held nowhere, whose
// Release and Extend do nothing; [FailClosed] denies; [FailLocal] takes a
// lease in process memory, out of limit divided by WithLocalInstances,
// kept until it is released or expires, for at most [MaxLocalKeys] keys
// (past them arbitrary keys are forgotten and their slots freed). Results
// made so have Degraded set. [WithDenyCache] does not apply (a slot frees
// whenever a lease is released), nor does [WithShadowMode] (a denied
// Acquire has no lease to hand out), nor does [WithLeases] (a slot is
// not a unit that can be spent in memory); any of them makes
// NewConcurrency return an error wrapping ErrInvalidConfig.
func NewConcurrency(c redis.Scripter, limit int, ttl time.Duration, opts ...Option) (*Concurrency, error) {
	if isNil(c) {
		return nil, ErrNilClient
	}
	if err := checkUnits(concurrencyTitle, "limit", limit, maxUnits); err != nil {
		return nil, err
	}
	if err := checkSpan(concurrencyTitle, "ttl", ttl); err != nil {
		return nil, err
	}
	l, err := configure(c, opts)
	if err != nil {
		return nil, err
	}
	if l.denyKeys != 0 {
		return nil, fmt.Errorf("%w: %s: WithDenyCache does not apply to leases", ErrInvalidConfig, concurrencyTitle)
	}
	if l.shadow {
		return nil, fmt.Errorf("%w: %s: WithShadowMode does not apply to leases", ErrInvalidConfig, concurrencyTitle)
	}
	if l.leaseUnits != 0 {
		return nil, fmt.Errorf("%w: %s: WithLeases does not apply to in-flight limits", ErrInvalidConfig, concurrencyTitle)
	}
	l.name, l.title, l.limit = concurrencyName, concurrencyTitle, limit
	l.keyPrefix = l.prefix + concurrencyName + ":{"
	l.sender = newSender(c, l.timeout, l.maxBatch)
	cc := &Concurrency{l: l, limit: limit, ttl: ttl, ttlMicros: ttl.Microseconds()}
	if l.policy == FailLocal {
		cc.local = newLeaseStore()
		cc.localLimit = int(localUnits(limit, l.instances))
	}
	return cc, nil
}

// TTL returns how long a lease lasts after it was taken or last extended:
// the ttl given to [NewConcurrency].
func (c *Concurrency) TTL() time.Duration { return c.ttl }

// Acquire takes a lease on key when fewer than the limit are held, in one
// script call that first drops the leases that have expired. The Result
// says where key stands after the call:
//
//   - Allowed: whether a lease was taken; the Lease is nil when not.
//   - Limit: the limit (under [FailLocal], the divided one).
//   - Remaining: the slots free after the call.
//   - RetryAfter: 0 when Allowed; otherwise how long until a slot frees
//     at the latest, by expiry: the earliest lease held expires (or,
//     when the key holds more leases than the limit, enough of them to
//     leave a slot); a release frees one sooner.
//   - ResetAfter: how long until the last lease held expires.
//   - Degraded: the failure policy decided (see [NewConcurrency]).
//
// A full key is a Result with Allowed false, not an error. An error means
// the key was bad ([ErrEmptyKey], [ErrKeyTooLong], with nothing sent to
// Redis), the context ended, or Redis failed under [FailError]. A call
// that times out may still take a slot in Redis, which frees at its
// expiry.
//
// Release the lease when the work ends, whatever the outcome:
//
//	lease, res, err := cc.Acquire(ctx, key)
//	if err != nil || !res.Allowed {
//		return // Redis failed, or retry in res.RetryAfter
//	}
//	defer lease.Release(context.WithoutCancel(ctx))
func (c *Concurrency) Acquire(ctx context.Context, key string) (*Lease, Result, error) {
	if c == nil || c.l == nil {
		return nil, Result{}, errConcurrencyNotBuilt
	}
	l := c.l
	var start time.Time
	if l.observe != nil {
		start = time.Now()
	}
	lease, o := c.acquire(ctx, key)
	if l.observe != nil {
		l.observed(ctx, start, o.src, o.sent(), o.res, o.err)
	}
	return lease, o.res, o.err
}

func (c *Concurrency) acquire(ctx context.Context, key string) (*Lease, outcome) {
	l := c.l
	if err := checkKey(key); err != nil {
		return nil, outcome{err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, outcome{err: l.wrap(err)}
	}
	token := newToken()
	rkey := l.redisKey(key)
	reply, err := l.sender.call(ctx, c.request(rkey, leaseAcquire, token))
	if err == nil {
		var r Result
		if r, err = parseReply(reply); err == nil {
			r.Limit = c.limit
			if !r.Allowed {
				return nil, outcome{res: r, src: fromRedis}
			}
			return &Lease{c: c, rkey: rkey, token: token}, outcome{res: r, src: fromRedis}
		}
	}
	ended, err := l.failed(ctx, err, true)
	if ended {
		return nil, outcome{err: err, src: fromRedis}
	}
	switch l.policy {
	case FailOpen:
		return &Lease{c: c}, outcome{res: l.degraded(true), covered: err, src: fromRedis}
	case FailClosed:
		return nil, outcome{res: l.degraded(false), covered: err, src: fromRedis}
	case FailLocal:
		lease, r := c.acquireLocal(key, token)
		return lease, outcome{res: r, covered: err, src: fromRedis}
	}
	return nil, outcome{err: err, src: fromRedis}
}

// request returns the call of the script in mode on the Redis key rkey
// for the lease token.
func (c *Concurrency) request(rkey, mode, token string) request {
	r := newRequest(concurrencyProgram, rkey, 5)
	// Constant strings held in an any allocate nothing.
	var now any = ""
	if c.l.now != nil {
		now = c.l.now().UnixMicro()
	}
	r.line = append(r.line, now, mode, token, c.ttlMicros, c.limit)
	return r
}

// newToken returns a lease's token: 128 random bits in hex, which no one
// can guess, so that a lease never names another's slot.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand's Read never fails
	return hex.EncodeToString(b[:])
}

// A Lease is one slot of a [Concurrency] key, held until it is released
// or expires. Its methods are safe for concurrent use; a nil *Lease (what
// [Concurrency.Acquire] returns with a denial) holds nothing.
type Lease struct {
	c     *Concurrency
	rkey  string // the Redis key, for a lease held in Redis
	key   string // the user key, for a lease held in process memory
	token string // "": held nowhere (FailOpen's)
	local bool   // held in process memory (FailLocal's)
}

// Release gives the lease's slot back, in one script call that removes
// the lease's own token and nothing else. It is idempotent: releasing a
// lease released or expired already returns nil, as does releasing a nil
// *Lease.
//
// When Redis fails, Release passes the error to [WithOnError] and returns
// it, under every failure policy: the slot then frees at the lease's
// expiry. A lease taken in process memory under [FailLocal] is released
// there, without Redis, and one taken under [FailOpen] holds nothing. A
// context that has ended fails the call as well, so release with a
// context that outlives the work's (context.WithoutCancel, say).
func (ls *Lease) Release(ctx context.Context) error {
	if ls == nil || ls.token == "" {
		return nil
	}
	c := ls.c
	if ls.local {
		c.local.release(ls.key, ls.token)
		return nil
	}
	if err := ctx.Err(); err != nil {
		return c.l.wrap(err)
	}
	reply, err := c.l.sender.call(ctx, c.request(ls.rkey, leaseRelease, ls.token))
	if err == nil {
		if _, err = parseFlag(reply); err == nil {
			return nil
		}
	}
	_, err = c.l.failed(ctx, err, true)
	return err
}

// Extend makes the lease last the Concurrency's ttl from now, in one
// script call, when it is still held; otherwise it returns an error
// wrapping [ErrLeaseLost] and leaves the slot to whoever holds it. Extend
// a lease periodically (every ttl/3, say) while long work runs; a nil
// *Lease is lost.
//
// When Redis fails, Extend passes the error to [WithOnError] and, under
// [FailOpen], returns nil (the work goes on, as FailOpen admits); under
// the other policies it returns the error, which is not ErrLeaseLost: the
// lease may still be held, until its expiry. A lease taken in process
// memory under [FailLocal] is extended there, and one taken under
// FailOpen holds nothing and is never lost.
func (ls *Lease) Extend(ctx context.Context) error {
	if ls == nil {
		return ErrLeaseLost
	}
	if ls.token == "" {
		return nil
	}
	c := ls.c
	if ls.local {
		if !c.local.extend(ls.key, ls.token, c.localNow(), c.ttlMicros) {
			return c.l.wrap(ErrLeaseLost)
		}
		return nil
	}
	if err := ctx.Err(); err != nil {
		return c.l.wrap(err)
	}
	reply, err := c.l.sender.call(ctx, c.request(ls.rkey, leaseExtend, ls.token))
	if err == nil {
		var held bool
		if held, err = parseFlag(reply); err == nil {
			if !held {
				return c.l.wrap(ErrLeaseLost)
			}
			return nil
		}
	}
	ended, err := c.l.failed(ctx, err, true)
	if !ended && c.l.policy == FailOpen {
		return nil
	}
	return err
}

// parseFlag returns the reply of a release or an extension: 1 when the
// lease was held, 0 when not.
func parseFlag(reply any) (bool, error) {
	n, ok := reply.(int64)
	if !ok || n < 0 || n > 1 {
		return false, fmt.Errorf("%w: got %v (%T), want 0 or 1", ErrMalformedReply, reply, reply)
	}
	return n == 1, nil
}

// localNow returns the time of the in-process leases, in µs since the
// Unix epoch: the [WithClock] clock's, or the local clock's.
func (c *Concurrency) localNow() int64 {
	if c.l.now != nil {
		return c.l.now().UnixMicro()
	}
	return time.Now().UnixMicro()
}

// acquireLocal takes a lease with token on key in process memory, as the
// script does in Redis, and returns it (nil when the key is full) with
// the Degraded Result.
func (c *Concurrency) acquireLocal(key, token string) (*Lease, Result) {
	now := c.localNow()
	sh := c.local.shard(key)
	defer sh.mu.Unlock()
	s := sh.m[key]
	if s == nil {
		s = &leaseSet{}
	}
	s.trim(now)
	r := Result{Limit: c.localLimit, Degraded: true}
	var lease *Lease
	if len(s.leases) < c.localLimit {
		s.leases = append(s.leases, localLease{token: token, expiry: now + c.ttlMicros})
		r.Allowed = true
		lease = &Lease{c: c, key: key, token: token, local: true}
	} else {
		r.RetryAfter = micros(s.first() - now)
	}
	r.Remaining = max(c.localLimit-len(s.leases), 0)
	r.ResetAfter = micros(s.ExpiresAt() - now)
	if len(s.leases) > 0 {
		sh.put(key, s, now, c.local.shardMax)
	} else {
		delete(sh.m, key)
	}
	return lease, r
}

// leaseStore holds FailLocal's leases in process memory, per key, for at
// most MaxLocalKeys keys. Its methods are safe for concurrent use.
type leaseStore struct {
	keyStore[*leaseSet]
}

func newLeaseStore() *leaseStore {
	s := &leaseStore{}
	s.init(MaxLocalKeys)
	return s
}

// release drops key's lease token, if held.
func (s *leaseStore) release(key, token string) {
	sh := s.shard(key)
	defer sh.mu.Unlock()
	ls := sh.m[key]
	if ls == nil {
		return
	}
	if i := ls.find(token); i >= 0 {
		ls.leases = append(ls.leases[:i], ls.leases[i+1:]...)
	}
	if len(ls.leases) == 0 {
		delete(sh.m, key)
	}
}

// extend makes key's lease token expire ttl µs after now, and reports
// whether it was still held.
func (s *leaseStore) extend(key, token string, now, ttl int64) bool {
	sh := s.shard(key)
	defer sh.mu.Unlock()
	ls := sh.m[key]
	if ls == nil {
		return false
	}
	ls.trim(now)
	i := ls.find(token)
	if i >= 0 {
		ls.leases[i].expiry = now + ttl
	}
	if len(ls.leases) == 0 {
		delete(sh.m, key)
	}
	return i >= 0
}

// leaseSet is one key's leases in process memory: few, as many as the
// process holds at once, so scanning them is cheap.
type leaseSet struct {
	leases []localLease
}

type localLease struct {
	token  string
	expiry int64 // µs since the Unix epoch
}

// trim drops the leases expired at now (µs).
func (s *leaseSet) trim(now int64) {
	kept := s.leases[:0]
	for _, l := range s.leases {
		if l.expiry > now {
			kept = append(kept, l)
		}
	}
	clear(s.leases[len(kept):])
	s.leases = kept
}

// find returns the index of the lease token, or -1.
func (s *leaseSet) find(token string) int {
	for i, l := range s.leases {
		if l.token == token {
			return i
		}
	}
	return -1
}

// first returns the earliest expiry held (µs); s holds at least one lease.
func (s *leaseSet) first() int64 {
	e := s.leases[0].expiry
	for _, l := range s.leases[1:] {
		e = min(e, l.expiry)
	}
	return e
}

// ExpiresAt returns the last expiry held (µs), or 0: when the set holds
// nothing more, for the store's sweep.
func (s *leaseSet) ExpiresAt() int64 {
	var e int64
	for _, l := range s.leases {
		e = max(e, l.expiry)
	}
	return e
}
