// Package grpclimit rate-limits gRPC calls with a [redislimit.Limiter]:
// interceptors for a server, which deny calls over the limit, and for a
// client, which waits until its own calls are within the limit before it
// sends them.
//
//	lim, err := redislimit.New(rdb, redislimit.TokenBucket(100, time.Second, 20))
//	...
//	ic, err := grpclimit.New(lim, grpclimit.WithExempt("/grpc.health.v1.Health/Check"))
//	...
//	srv := grpc.NewServer(
//		grpc.ChainUnaryInterceptor(ic.UnaryServer()),
//		grpc.ChainStreamInterceptor(ic.StreamServer()),
//	)
//
// # Server
//
// The server interceptors key each call on its client's address (see
// [WithTrustedProxies]) or on what [WithKeyFunc] returns, and charge it
// [WithCost]'s units (1 by default) with [redislimit.Limiter.AllowN]; a
// stream is charged once, when it opens. A call the limiter admits goes to
// the handler; a call a limiter in shadow mode admits though its limit
// denied it is served too. A denied call ends with the status
// [codes.ResourceExhausted] (or [WithCode]'s) and the details
// [errdetails.RetryInfo] (RetryDelay: the decision's RetryAfter) and
// [errdetails.QuotaFailure] (one violation: Subject "peer" for the
// client's address or "key" for [WithKeyFunc]'s, Description the limit,
// such as "limit of 100 per 1s"), and with the trailer
// [RetryPushbackTrailer], which a gRPC client with a retry policy waits
// for before it tries again. The handler is not called.
//
// When the limiter fails (Redis is down and its failure policy returns the
// error), the call ends with [codes.Unavailable]; when the key cannot be
// found (an error from [WithKeyFunc], a peer with no IP address), with
// [codes.Internal]; when the call's own context has ended, with
// [codes.Canceled] or [codes.DeadlineExceeded]. The handler is not called
// in any of those cases. A decision the limiter's failure policy made
// while Redis was down (Degraded) is applied as made. Status messages
// never hold the key, which may be a client's address or credential.
//
// A server on a transport without IP addresses (a Unix socket) has no
// client address to key on: give it [WithKeyFunc].
//
// # Client
//
// [Interceptors.UnaryClient] paces a client's own calls with
// [redislimit.Limiter.WaitN] before each is sent, so that a fleet of
// clients stays within a shared limit of the server they call.
//
// All methods of [Interceptors] and the interceptors they return are safe
// for concurrent use.
package grpclimit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/redislimit/redislimit"
)

var (
	// ErrNilLimiter is returned by [New] when its limiter is nil.
	ErrNilLimiter = errors.New("grpclimit: nil limiter")
	// ErrInvalidOption is returned, wrapped, by [New] when an option is
	// invalid: a nil function, a code that is not an error, a prefix that
	// is not valid, or [WithTrustedProxies] with [WithKeyFunc].
	ErrInvalidOption = errors.New("grpclimit: invalid option")
)

// RetryPushbackTrailer is the trailer a server sets on a denied call: the
// RetryAfter of the decision in whole milliseconds, rounded up. A gRPC
// client whose retry policy makes the status retryable waits that long
// before its next attempt, instead of its own backoff.
const RetryPushbackTrailer = "grpc-retry-pushback-ms"

// ForwardedForKey is the metadata key the server interceptors read the
// client's address from when the peer is a trusted proxy
// ([WithTrustedProxies]).
const ForwardedForKey = "x-forwarded-for"

// Subjects of the [errdetails.QuotaFailure] violation of a denied call:
// what the limiter's key was made of.
const (
	// SubjectPeer is the subject when the key is the client's address.
	SubjectPeer = "peer"
	// SubjectKey is the subject when the key came from [WithKeyFunc].
	SubjectKey = "key"
)

// maxForwardHops is how many entries of x-forwarded-for the server reads,
// counted from the right. When all of them are trusted proxies, the
// leftmost of them is the client; a client cannot use the bound to choose
// its address, since what it sends lies left of the entry its first
// trusted proxy appends, which is always read.
const maxForwardHops = 64

// errNoPeerAddr is returned, wrapped, when a call's peer has no IP address
// to key on.
var errNoPeerAddr = errors.New("grpclimit: peer has no IP address")

// errNoKey ends a call whose key could not be found. Its message leaves
// out the cause, which may hold a client's address or credential.
var errNoKey = status.Error(codes.Internal, "grpclimit: no rate-limit key for the call")

// errNotMade ends the calls of interceptors of a zero Interceptors.
var errNotMade = status.Error(codes.Internal, "grpclimit: Interceptors not made with New")

// An Option configures [New].
type Option func(*Interceptors) error

// WithCode sets the status code of a denied call. The default is
// [codes.ResourceExhausted], which gRPC clients may retry with a retry
// policy; [codes.Unavailable] is another common choice. [codes.OK] and
// codes outside the ones gRPC defines are invalid.
func WithCode(c codes.Code) Option {
	return func(ic *Interceptors) error {
		if c == codes.OK || c > codes.Unauthenticated {
			return fmt.Errorf("%w: WithCode(%v): not an error code", ErrInvalidOption, c)
		}
		ic.code = c
		return nil
	}
}

// WithTrustedProxies makes the server interceptors key a call on the
// client behind its proxies: when the peer lies in one of the prefixes,
// the key is the first address outside them found walking the metadata
// [ForwardedForKey] from the right (each value a comma-separated list;
// entries "ip", "ip:port", "[ipv6]" or "[ipv6]:port"). An entry that is
// not an address ends the walk: the key is then the nearest trusted hop
// to its right, starting with the peer, never anything a client could have
// chosen. When every entry read is trusted, the key is the leftmost one;
// at most 64 entries are read. Trusted proxies must append to the
// metadata they forward. By default no proxy is trusted and the key is the
// peer's address. It cannot be combined with [WithKeyFunc].
func WithTrustedProxies(prefixes ...netip.Prefix) Option {
	return func(ic *Interceptors) error {
		for _, p := range prefixes {
			if !p.IsValid() {
				return fmt.Errorf("%w: WithTrustedProxies: invalid prefix", ErrInvalidOption)
			}
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			ic.trusted = append(ic.trusted, p.Masked())
		}
		ic.trustSet = true
		return nil
	}
}

// WithKeyFunc sets how a call's key is found: f gets the call's context
// (with its incoming metadata, on a server) and its full method name
// ("/package.Service/Method"). An error from f ends a server call with
// [codes.Internal] (and a client call likewise), before the handler is
// called. On a server the default is the client's address: an IPv4
// address as it is ("203.0.113.7"), an IPv6 address as its /64 prefix
// ("2001:db8:1:2::/64"), an IPv4-mapped IPv6 address as IPv4. On a client
// ([Interceptors.UnaryClient]) the default is the full method name, so
// that each method is paced on its own.
func WithKeyFunc(f func(ctx context.Context, fullMethod string) (string, error)) Option {
	return func(ic *Interceptors) error {
		if f == nil {
			return fmt.Errorf("%w: WithKeyFunc(nil)", ErrInvalidOption)
		}
		ic.keyFunc = f
		return nil
	}
}

// WithCost sets the units a call costs, by its full method name; a stream
// is charged once, when it opens. The default is 1 for every method. A
// cost below 1, or above the limit, makes the limiter fail the call (see
// [redislimit.ErrInvalidCost], [redislimit.ErrCostExceedsLimit]).
func WithCost(f func(fullMethod string) int) Option {
	return func(ic *Interceptors) error {
		if f == nil {
			return fmt.Errorf("%w: WithCost(nil)", ErrInvalidOption)
		}
		ic.cost = f
		return nil
	}
}

// WithExempt exempts methods, by full name ("/grpc.health.v1.Health/Check"),
// from the limit: their calls go to the handler (or, on a client, are sent)
// without asking the limiter. Nothing is exempt by default. Options given
// more than once add up.
func WithExempt(fullMethods ...string) Option {
	return func(ic *Interceptors) error {
		if ic.exempt == nil {
			ic.exempt = make(map[string]bool, len(fullMethods))
		}
		for _, m := range fullMethods {
			ic.exempt[m] = true
		}
		return nil
	}
}

// Interceptors holds the gRPC interceptors that rate-limit calls with one
// limiter. Make it with [New]; the interceptors of its zero value end
// every call with [codes.Internal]. Its methods are safe for concurrent
// use.
type Interceptors struct {
	lim      *redislimit.Limiter
	code     codes.Code
	trusted  []netip.Prefix // unmapped and masked
	trustSet bool
	keyFunc  func(ctx context.Context, fullMethod string) (string, error)
	cost     func(fullMethod string) int
	exempt   map[string]bool
}

// New returns the interceptors that limit calls with lim. It returns
// [ErrNilLimiter] when lim is nil, and an error wrapping
// [ErrInvalidOption] when an option is invalid.
func New(lim *redislimit.Limiter, opts ...Option) (*Interceptors, error) {
	if lim == nil {
		return nil, ErrNilLimiter
	}
	ic := &Interceptors{lim: lim, code: codes.ResourceExhausted}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil option", ErrInvalidOption)
		}
		if err := o(ic); err != nil {
			return nil, err
		}
	}
	if ic.trustSet && ic.keyFunc != nil {
		return nil, fmt.Errorf("%w: WithTrustedProxies has no effect with WithKeyFunc", ErrInvalidOption)
	}
	return ic, nil
}

// UnaryServer returns the interceptor that limits a server's unary calls.
// A denied call's trailer is set with [grpc.SetTrailer].
func (ic *Interceptors) UnaryServer() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := ic.admit(ctx, info.FullMethod, func(md metadata.MD) { _ = grpc.SetTrailer(ctx, md) }); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServer returns the interceptor that limits a server's streams,
// charging each once when it opens. A denied stream's trailer is set with
// the stream's SetTrailer.
func (ic *Interceptors) StreamServer() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := ic.admit(ss.Context(), info.FullMethod, ss.SetTrailer); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// admit decides a server call and returns nil when it may go to the
// handler, or the status error that ends it.
func (ic *Interceptors) admit(ctx context.Context, method string, setTrailer func(metadata.MD)) error {
	if ic.lim == nil {
		return errNotMade
	}
	if ic.exempt[method] {
		return nil
	}
	key, subject, err := ic.serverKey(ctx, method)
	if err != nil {
		return errNoKey
	}
	res, err := ic.lim.AllowN(ctx, key, ic.costOf(method))
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Error(codes.Unavailable, "grpclimit: the rate limiter could not decide")
	}
	if res.Allowed {
		return nil
	}
	setTrailer(metadata.Pairs(RetryPushbackTrailer, strconv.FormatInt(ceilMillis(res.RetryAfter), 10)))
	return ic.denial(res, subject)
}

// denial returns the status error of a denied call.
func (ic *Interceptors) denial(res redislimit.Result, subject string) error {
	st := status.New(ic.code, fmt.Sprintf("grpclimit: rate limit exceeded, retry in %v", res.RetryAfter))
	withDetails, err := st.WithDetails(
		&errdetails.RetryInfo{RetryDelay: durationpb.New(res.RetryAfter)},
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
			Subject:     subject,
			Description: ic.describe(res),
		}}},
	)
	if err != nil { // only for a code of OK, which New rejects
		return st.Err()
	}
	return withDetails.Err()
}

// describe says what limit denied res: "limit of 100 per 1s", or, for a
// limiter on redislimit.All, the parts that denied it, joined with "; ".
func (ic *Interceptors) describe(res redislimit.Result) string {
	quotas := ic.lim.Quotas()
	var parts []string
	for i, q := range quotas {
		if len(res.Parts) == len(quotas) && len(quotas) > 1 && res.Parts[i].Allowed {
			continue
		}
		parts = append(parts, describeQuota(q))
	}
	if len(parts) == 0 {
		return fmt.Sprintf("limit of %d", res.Limit)
	}
	return strings.Join(parts, "; ")
}

func describeQuota(q redislimit.Quota) string {
	if q.Window <= 0 {
		return fmt.Sprintf("limit of %d", q.Limit)
	}
	return fmt.Sprintf("limit of %d per %v", q.Limit, q.Window)
}

// ceilMillis returns d in whole milliseconds, rounded up; 0 for d <= 0.
func ceilMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

func (ic *Interceptors) costOf(method string) int {
	if ic.cost == nil {
		return 1
	}
	return ic.cost(method)
}

// serverKey returns the key of a server call, and the subject that names
// what it was made of.
func (ic *Interceptors) serverKey(ctx context.Context, method string) (key, subject string, err error) {
	if ic.keyFunc != nil {
		key, err = ic.keyFunc(ctx, method)
		return key, SubjectKey, err
	}
	a, err := clientAddr(ctx, ic.trusted)
	if err != nil {
		return "", SubjectPeer, err
	}
	return keyOf(a), SubjectPeer, nil
}

// UnaryClient returns the interceptor that paces a client's unary calls:
// before each call is sent, it waits with [redislimit.Limiter.WaitN]
// until the call (of [WithCost]'s cost) is within the limit, for as long as
// the call's context allows. Its key is [WithKeyFunc]'s, or by default the
// full method name. Exempt methods ([WithExempt]) are sent at once.
//
// When the wait fails, the call is not sent and ends with a status error:
// [codes.ResourceExhausted] when the wait would pass the context's
// deadline (WaitN returns at once then, without sleeping),
// [codes.Canceled] or [codes.DeadlineExceeded] when the context ended
// while it waited, [codes.Internal] when the key function failed, and
// [codes.Unavailable] for any other error (Redis failed, under a failure
// policy that returns the error; or bad input, such as a cost above the
// limit).
func (ic *Interceptors) UnaryClient() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if !ic.exempt[method] {
			if err := ic.wait(ctx, method); err != nil {
				return err
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// wait paces one client call and returns nil once it may be sent, or the
// status error that ends it.
func (ic *Interceptors) wait(ctx context.Context, method string) error {
	if ic.lim == nil {
		return errNotMade
	}
	key := method
	if ic.keyFunc != nil {
		var err error
		if key, err = ic.keyFunc(ctx, method); err != nil {
			return errNoKey
		}
	}
	err := ic.lim.WaitN(ctx, key, ic.costOf(method))
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case errors.Is(err, context.DeadlineExceeded):
		// WaitN's "would pass the deadline", returned before the deadline.
		return status.Error(codes.ResourceExhausted, "grpclimit: the rate limit allows no call before the deadline")
	default:
		return status.Error(codes.Unavailable, "grpclimit: the rate limiter could not decide")
	}
}

// clientAddr returns the address of the client of a server call: its
// peer's, or, when the peer is trusted, the one found in x-forwarded-for
// (see WithTrustedProxies). The result is unmapped and has no zone.
func clientAddr(ctx context.Context, trusted []netip.Prefix) (netip.Addr, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}, errNoPeerAddr
	}
	addr, ok := peerAddr(p.Addr)
	if !ok {
		return netip.Addr{}, errNoPeerAddr
	}
	if !isTrusted(addr, trusted) {
		return addr, nil
	}
	hops := forwardHops(metadata.ValueFromIncomingContext(ctx, ForwardedForKey))
	last := addr
	for _, h := range hops {
		a, ok := parseHop(h)
		if !ok {
			return last, nil
		}
		if !isTrusted(a, trusted) {
			return a, nil
		}
		last = a
	}
	return last, nil
}

// peerAddr returns the IP address of a peer's net.Addr, normalized.
func peerAddr(a net.Addr) (netip.Addr, bool) {
	if t, ok := a.(*net.TCPAddr); ok {
		ip, ok := netip.AddrFromSlice(t.IP)
		return normalize(ip), ok
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return normalize(ap.Addr()), true
	}
	return netip.Addr{}, false
}

// forwardHops returns the last maxForwardHops non-empty entries of the
// x-forwarded-for values, the rightmost first.
func forwardHops(values []string) []string {
	var hops []string
	for i := len(values) - 1; i >= 0 && len(hops) < maxForwardHops; i-- {
		entries := strings.Split(values[i], ",")
		for j := len(entries) - 1; j >= 0 && len(hops) < maxForwardHops; j-- {
			if e := strings.TrimSpace(entries[j]); e != "" {
				hops = append(hops, e)
			}
		}
	}
	return hops
}

// parseHop parses one x-forwarded-for entry: "ip", "ip:port" (IPv4),
// "[ipv6]" or "[ipv6]:port".
func parseHop(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return normalize(a), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return normalize(ap.Addr()), true
	}
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return normalize(a), true
		}
	}
	return netip.Addr{}, false
}

// normalize unmaps a and drops its zone, so that prefixes match it.
func normalize(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// isTrusted reports whether a lies inside one of trusted.
func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// keyOf returns the limiter key of a client address: IPv4 as it is, IPv6
// as its /64 prefix.
func keyOf(a netip.Addr) string {
	a = normalize(a)
	if a.Is4() {
		return a.String()
	}
	p, err := a.Prefix(64)
	if err != nil { // unreachable: a is a valid IPv6 address
		return a.String()
	}
	return p.String()
}
