package redislimit

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redislimit/redislimit/internal/luascript"
)

// This file is leased units for hot keys ([WithLeases]): take units of a
// key from Redis in one script call, spend them in memory, give back what
// is left when the lease ends. Every unit admitted from a lease was
// consumed in Redis first, so a fleet never admits more than one Redis
// would.

// maxHotKeys bounds the keys whose rate a Limiter's leases follow: past
// it, keys that have had no decision since the last sweep are forgotten
// (at most one sweep a rateSpan), and a new key decides in Redis until
// there is room.
const maxHotKeys = 4096

// minLease is the smallest lease worth a script call: below it, a key
// decides in Redis.
const minLease = 2

// leases holds a Limiter's leased units and the rates that size them,
// by key. Its methods are safe for concurrent use.
type leases struct {
	l        *Limiter
	maxUnits int64
	maxAge   int64 // µs
	keys     sync.Map
	size     atomic.Int64 // entries in keys
	swept    atomic.Int64 // when keys was last swept, µs on the limiter's clock
}

func newLeases(l *Limiter) *leases {
	return &leases{l: l, maxUnits: l.leaseUnits, maxAge: l.leaseAge.Microseconds()}
}

// A hotKey is what the leases know of one key: its current lease, its
// rate, and the lease request in flight.
type hotKey struct {
	key   string
	cur   atomic.Pointer[lease]
	calls atomic.Int64 // decisions, counted since the key was first seen

	mu      sync.Mutex
	resets  int64   // Resets of the key; guarded by mu
	pending *take   // the lease request in flight; nil: none
	since   int64   // start of the current rate span, µs on the limiter's clock
	base    int64   // calls at since
	rate    float64 // decisions per µs in the last full span
	swept   int64   // calls at the last sweep
}

// A lease is units of a key consumed in Redis and not yet admitted.
type lease struct {
	units   atomic.Int64 // left; 0 once the lease has ended
	expires int64        // µs on the limiter's clock
	takenAt int64        // µs on the limiter's clock
	// giveBack is the mode of the script call that gives the units back,
	// a refund that holds only before a time (luascript.GiveBackPrefix);
	// "" when they cannot be given back exactly, and stay consumed.
	giveBack string
	res      Result // what Redis said when the lease was taken
	timer    atomic.Pointer[time.Timer]
}

// A take is a lease request in flight, which concurrent callers on its
// key share.
type take struct {
	done   chan struct{}
	need   int   // the cost of the call that asked
	size   int64 // the units asked for
	resets int64 // the key's Resets when it was asked for
	// Set before done is closed:
	res Result // Redis's denial when it granted nothing
	got int64  // units granted
	err error  // the call's error
}

// leaseClock returns the limiter's time for leases, in µs: [WithClock]'s, or
// a monotonic clock.
func (l *Limiter) leaseClock() int64 {
	if l.now != nil {
		return l.now().UnixMicro()
	}
	return monoMicros()
}

// hot returns key's entry, made when missing; nil when the table is full
// of keys that are not idle.
func (ls *leases) hot(key string) *hotKey {
	if v, ok := ls.keys.Load(key); ok {
		return v.(*hotKey)
	}
	if ls.size.Load() >= maxHotKeys {
		// At most one sweep a rateSpan: a key is idle when it had no
		// decision for that long.
		now, last := ls.l.leaseClock(), ls.swept.Load()
		if now-last < rateSpan.Microseconds() && now >= last || !ls.swept.CompareAndSwap(last, now) {
			return nil
		}
		ls.sweep()
		if ls.size.Load() >= maxHotKeys {
			return nil
		}
	}
	hk := &hotKey{key: key, since: ls.l.leaseClock()}
	if v, loaded := ls.keys.LoadOrStore(key, hk); loaded {
		return v.(*hotKey)
	}
	ls.size.Add(1)
	return hk
}

// sweep forgets the keys that had no decision since the last sweep and
// hold no lease.
func (ls *leases) sweep() {
	ls.keys.Range(func(k, v any) bool {
		hk := v.(*hotKey)
		c := hk.calls.Load()
		hk.mu.Lock()
		idle := c == hk.swept && hk.pending == nil
		hk.swept = c
		hk.mu.Unlock()
		if p := hk.cur.Load(); idle && (p == nil || p.units.Load() == 0) {
			if ls.keys.CompareAndDelete(k, v) {
				ls.size.Add(-1)
			}
		}
		return true
	})
}

// spend admits a call of cost n on key from its lease, if it holds n
// units and has not expired. It returns key's entry, for [leases.take],
// or nil when the table has no room for it.
func (ls *leases) spend(key string, n int) (Result, *hotKey, bool) {
	hk := ls.hot(key)
	if hk == nil {
		return Result{}, nil, false
	}
	hk.calls.Add(1)
	r, ok := ls.spendFrom(hk, n, ls.l.leaseClock())
	return r, hk, ok
}

// spendFrom is spend on hk at now; it ends hk's lease once it has expired,
// or when the clock reads before the lease was taken.
func (ls *leases) spendFrom(hk *hotKey, n int, now int64) (Result, bool) {
	p := hk.cur.Load()
	if p == nil {
		return Result{}, false
	}
	if now >= p.expires || now < p.takenAt {
		ls.end(hk.key, p)
		return Result{}, false
	}
	for {
		u := p.units.Load()
		if u < int64(n) {
			return Result{}, false
		}
		if p.units.CompareAndSwap(u, u-int64(n)) {
			return ls.result(p, u-int64(n), now), true
		}
	}
}

// result returns the Result of a call admitted from p, which has left
// units after it: Remaining counts them and what Redis had left when p
// was taken; ResetAfter is Redis's less the time since.
func (ls *leases) result(p *lease, left, now int64) Result {
	r := p.res
	since := time.Duration(now-p.takenAt) * time.Microsecond
	r.Remaining = int(min(int64(r.Remaining)+left, int64(ls.l.limit)))
	r.ResetAfter = max(r.ResetAfter-since, 0)
	if r.Parts != nil {
		parts := make([]Result, len(r.Parts))
		for i, q := range r.Parts {
			q.Remaining = int(min(int64(q.Remaining)+left, int64(q.Limit)))
			q.ResetAfter = max(q.ResetAfter-since, 0)
			parts[i] = q
		}
		r.Parts = parts
	}
	return r
}

// rateSpan is the longest span over which a key's rate is measured, and
// minRateSpan the shortest that gives an estimate.
const (
	rateSpan    = 100 * time.Millisecond
	minRateSpan = time.Millisecond
)

// sizeFor returns how many units a lease of hk should take now, for a
// call of cost n: the decisions that hk's rate makes in half of maxAge,
// at most maxUnits; 0 when that is fewer than minLease calls of cost n.
// The rate is the decisions counted over the last span of rateSpan (or
// maxAge, if shorter), or over the current one once it is minRateSpan
// long, whichever is higher. hk.mu must be held.
func (ls *leases) sizeFor(hk *hotKey, n int, now int64) int64 {
	c := hk.calls.Load()
	span := now - hk.since
	if span < 0 {
		hk.since, hk.base, hk.rate = now, c, 0
		return 0
	}
	rate := hk.rate
	switch {
	case span >= min(rateSpan.Microseconds(), ls.maxAge):
		rate = float64(c-hk.base) / float64(span)
		hk.since, hk.base, hk.rate = now, c, rate
	case span >= minRateSpan.Microseconds():
		rate = max(rate, float64(c-hk.base)/float64(span))
	}
	want := rate * float64(ls.maxAge) / 2
	if want < minLease*float64(n) {
		return 0
	}
	return int64(min(want, float64(ls.maxUnits)))
}

// leaseTries bounds how often one call waits for a lease request before
// it decides in Redis alone: calls that keep the key busy from a lease
// can spend each new lease before a woken caller runs.
const leaseTries = 8

// take decides a call of cost n on hk's key through a lease: from the units
// a request in flight brings, or by asking for a lease itself, when the
// key's rate makes one pay. It reports false when the call should be
// decided in Redis as usual. It waits for lease requests no longer than
// the limiter's timeout in all, nor past ctx's end.
func (ls *leases) take(ctx context.Context, hk *hotKey, n int, at sendStamp) (outcome, bool) {
	l, key := ls.l, hk.key
	start := time.Now()
	var timeout *time.Timer
	defer func() {
		if timeout != nil {
			timeout.Stop()
		}
	}()
	for try := range leaseTries {
		if try > 0 {
			at = l.stamp() // the time of this request, not of the last
		}
		now := l.leaseClock()
		if r, ok := ls.spendFrom(hk, n, now); ok {
			return outcome{res: r, src: fromLease}, true
		}
		hk.mu.Lock()
		p := hk.pending
		asked := false
		if p == nil {
			size := ls.sizeFor(hk, n, now)
			if size < int64(n) || size < minLease {
				hk.mu.Unlock()
				return outcome{}, false
			}
			p = &take{done: make(chan struct{}), need: n, size: size, resets: hk.resets}
			hk.pending = p
			asked = true
			go ls.request(context.WithoutCancel(ctx), hk, p, at)
		}
		hk.mu.Unlock()
		if timeout == nil {
			timeout = time.NewTimer(l.timeout - time.Since(start))
		}
		select {
		case <-p.done:
		case <-ctx.Done():
			return outcome{err: l.wrap(ctx.Err()), src: fromLease}, true
		case <-timeout.C:
			err := fmt.Errorf("%w after %v waiting for a lease", ErrTimeout, l.timeout)
			o := l.finish(ctx, key, n, true, at, nil, err, true)
			o.src = fromLease
			return o, true
		}
		src := fromLease
		if asked {
			src = fromLeaseTake
		}
		switch {
		case p.err != nil:
			o := l.finish(ctx, key, n, true, at, nil, p.err, false)
			o.src = src
			return o, true
		case p.got == 0 && n >= p.need:
			return outcome{res: p.res, src: src}, true
		case p.got == 0:
			return outcome{}, false
		}
		if r, ok := ls.spendFrom(hk, n, l.leaseClock()); ok {
			return outcome{res: r, src: src}, true
		}
		if p.got < p.size {
			// The key ran short: what it had went to other calls. Redis
			// decides this one, and denies it if it is still short.
			return outcome{}, false
		}
	}
	return outcome{}, false
}

// request asks Redis for a lease of up to p.size units of hk's key, at
// least p.need, and installs it, unless the key was Reset meanwhile; it
// ends the lease it replaces.
func (ls *leases) request(ctx context.Context, hk *hotKey, p *take, at sendStamp) {
	l := ls.l
	// The lease's time starts no later than the script's: its units
	// were taken at the script's time, which WithClock's is, and Redis's
	// clock reads after the call was sent.
	sentAt := l.leaseClock()
	if l.now != nil {
		sentAt = at.now
	}
	mode := luascript.LeasePrefix + strconv.FormatInt(p.size, 10)
	reply, err := l.sender.call(ctx, l.prepareMode(hk.key, p.need, mode, at.now))
	var r Result
	var got, scriptNow int64
	if err == nil {
		r, got, scriptNow, err = l.parseLease(reply)
		if err == nil && (got > p.size || got > 0 && got < int64(p.need)) {
			err = fmt.Errorf("%w: a lease of %d units, asked for %d to %d", ErrMalformedReply, got, p.need, p.size)
		}
	}
	var np *lease
	switch {
	case err != nil:
		p.err = err
		if callerDone(ctx) == nil && l.onError != nil {
			l.onError(ctx, l.wrap(err))
		}
	case got == 0:
		p.res = r
		if l.denials != nil {
			l.denials.record(hk.key, l.params, p.need, at.now, at.epoch, r)
		}
	default:
		np = &lease{takenAt: sentAt, expires: sentAt + ls.maxAge, res: r}
		np.res.Allowed, np.res.RetryAfter = true, 0
		life, back := leaseTermsOf(l.alg, r, got)
		if life >= 0 {
			np.expires = min(np.expires, sentAt+life.Microseconds())
		}
		if back > 0 {
			np.giveBack = luascript.GiveBackPrefix + strconv.FormatInt(scriptNow+back.Microseconds(), 10)
		}
		np.units.Store(got)
	}
	hk.mu.Lock()
	if np != nil && hk.resets == p.resets {
		p.got = np.units.Load()
		if old := hk.cur.Swap(np); old != nil {
			ls.end(hk.key, old)
		}
		t := time.AfterFunc(time.Duration(np.expires-sentAt)*time.Microsecond, func() { ls.end(hk.key, np) })
		np.timer.Store(t)
		if np.units.Load() == 0 {
			t.Stop() // ended meanwhile
		}
	}
	// A lease taken across a Reset is dropped: its units may come from
	// the state that Reset deleted.
	hk.pending = nil
	hk.mu.Unlock()
	close(p.done)
}

// parseLease returns the Result of a lease request's reply, the units it
// granted and the script's time in µs.
func (l *Limiter) parseLease(reply any) (Result, int64, int64, error) {
	a, ok := reply.([]any)
	if !ok || len(a) < 2 {
		r, err := l.parse(reply) // reports the malformed reply
		if err == nil {
			err = ErrMalformedReply
		}
		return r, 0, 0, err
	}
	r, err := l.parse(a[:len(a)-2])
	if err != nil {
		return r, 0, 0, err
	}
	got, ok1 := a[len(a)-2].(int64)
	now, ok2 := a[len(a)-1].(int64)
	if !ok1 || !ok2 || got < 0 || (got > 0) != r.Allowed {
		return r, 0, 0, ErrMalformedReply
	}
	return r, got, now, nil
}

// stop ends p and returns its units left, which only the first call
// sees.
func (p *lease) stop() int64 {
	left := p.units.Swap(0)
	if t := p.timer.Load(); t != nil {
		t.Stop()
	}
	return left
}

// end ends p, a lease of key, and gives its units back, once.
func (ls *leases) end(key string, p *lease) {
	if left := p.stop(); left > 0 && p.giveBack != "" {
		// Errors go to OnError; the units stay consumed.
		go func() { _ = ls.giveBack(context.Background(), key, p.giveBack, left) }()
	}
}

// giveBack sends n units of key back to Redis in mode.
func (ls *leases) giveBack(ctx context.Context, key, mode string, n int64) error {
	l := ls.l
	_, err := l.sender.call(ctx, l.prepareMode(key, int(n), mode, l.sendTime()))
	if err != nil {
		_, err = l.failed(ctx, err, true)
	}
	return err
}

// leaseTermsOf returns alg's terms for a lease whose take Redis answered
// with r ([leaseTermer]); an algorithm without terms admits from a lease
// for maxAge and cannot give units back.
func leaseTermsOf(alg Algorithm, r Result, got int64) (life, giveBack time.Duration) {
	if t, ok := alg.(leaseTermer); ok {
		return t.leaseTerms(r, got)
	}
	return -1, 0
}

// A leaseTermer is an algorithm that bounds how long leased units may be
// admitted, or can take them back exactly.
type leaseTermer interface {
	// leaseTerms returns, for a take of got units that Redis answered
	// with r: how long
	// after it the units may still be admitted (negative: for maxAge), and
	// how long after it a Refund of them leaves the key as if they had
	// never been taken (zero or less: never).
	leaseTerms(r Result, got int64) (life, giveBack time.Duration)
}

// A token bucket's refund moves its TAT back, never before now: as if the
// units had never been taken while, without them, the bucket would not
// have been full, which it would be from the TAT before the take:
// ResetAfter less the units' refill. (Once full, a bucket forgets time; a
// later refund would free units that others took since.) A bucket full
// before the take cannot take its units back. The µs taken off covers
// the rounding of ResetAfter.
func (a tokenBucket) leaseTerms(r Result, got int64) (time.Duration, time.Duration) {
	refill := time.Duration(float64(a.per) / float64(a.rate) * float64(got))
	return -1, max(r.ResetAfter-refill-time.Microsecond, 0)
}

// A fixed window's refund lowers the count of the window it finds: the
// one the units were taken in until it ends, which ResetAfter names. A
// unit admitted after it would count in no window.
func (fixedWindow) leaseTerms(r Result, _ int64) (time.Duration, time.Duration) {
	return r.ResetAfter, r.ResetAfter
}

// A calendar period's count, as a fixed window's.
func (calendarQuota) leaseTerms(r Result, _ int64) (time.Duration, time.Duration) {
	return r.ResetAfter, r.ResetAfter
}

// A sliding window's refund takes from the current window's count first:
// exact while the window the units were taken in is current. After a
// take its count is positive, so ResetAfter runs a window past its end.
func (a slidingWindow) leaseTerms(r Result, _ int64) (time.Duration, time.Duration) {
	d := max(r.ResetAfter-a.window, 0)
	return d, d
}

// A sliding log's refund removes its newest entries, which may be others'
// taken after the lease: its units cannot go back.
func (slidingLog) leaseTerms(Result, int64) (time.Duration, time.Duration) { return -1, 0 }

// All's lease lasts as long as its shortest-lived part allows, and gives
// back while every part can.
func (a allOf) leaseTerms(r Result, got int64) (life, giveBack time.Duration) {
	if len(r.Parts) != len(a.parts) {
		return 0, 0
	}
	life, giveBack = -1, -1
	for i, p := range a.parts {
		l, g := leaseTermsOf(p, r.Parts[i], got)
		if l >= 0 && (life < 0 || l < life) {
			life = l
		}
		if giveBack < 0 || g < giveBack {
			giveBack = g
		}
	}
	return life, max(giveBack, 0)
}

// drop ends key's lease without giving its units back, for a Reset: the
// key's state in Redis is gone, and with it what the lease took.
func (ls *leases) drop(key string) {
	if v, ok := ls.keys.Load(key); ok {
		hk := v.(*hotKey)
		hk.mu.Lock()
		hk.resets++
		if p := hk.cur.Load(); p != nil {
			p.stop()
		}
		hk.mu.Unlock()
	}
}

// ReturnLeases ends every lease that the limiter, and every Limiter
// derived from it with [Limiter.Using], holds, and gives their unused
// units back to Redis, as a process does before it exits: the units then
// count for the other processes at once, rather than when the leases
// would have ended. It waits for the lease requests in flight, whose
// units come back too. Decisions made meanwhile may take new leases. It
// returns the first error of a give-back that failed (whose units stay
// consumed: the limit under-admits, never over-admits), or nil. A
// limiter without [WithLeases] has none to return.
func (l *Limiter) ReturnLeases(ctx context.Context) error {
	var first error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, ls := range l.fam.leaseSets() {
		ls.keys.Range(func(_, v any) bool {
			hk := v.(*hotKey)
			hk.mu.Lock()
			pending := hk.pending
			hk.mu.Unlock()
			if pending != nil {
				// A request in flight, whose callers may have gone:
				// its units come back too.
				select {
				case <-pending.done:
				case <-ctx.Done():
				}
			}
			p := hk.cur.Load()
			if p == nil {
				return true
			}
			left := p.stop()
			if left == 0 || p.giveBack == "" {
				return true
			}
			wg.Go(func() {
				if err := ls.giveBack(ctx, hk.key, p.giveBack, left); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			})
			return true
		})
	}
	wg.Wait()
	return first
}
