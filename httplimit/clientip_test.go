package httplimit

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// newClientRequest returns a request from remoteAddr carrying headers,
// each written "Name: value" and added as its own field line.
func newClientRequest(t testing.TB, remoteAddr string, headers ...string) *http.Request {
	t.Helper()
	r := &http.Request{RemoteAddr: remoteAddr, Header: http.Header{}}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			t.Fatalf("header %q has no colon", h)
		}
		r.Header.Add(name, strings.TrimPrefix(value, " "))
	}
	return r
}

func prefixes(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

// chain returns n comma-separated addresses 10.0.x.y, the first 10.0.0.0.
func chain(n int) string {
	hops := make([]string, n)
	for i := range hops {
		hops[i] = fmt.Sprintf("10.0.%d.%d", i/256, i%256)
	}
	return strings.Join(hops, ", ")
}

func TestClientAddr(t *testing.T) {
	t.Parallel()
	proxies := prefixes("10.0.0.0/8", "2001:db8:ffff::/48")
	tests := []struct {
		name    string
		remote  string
		trusted []netip.Prefix
		headers []string
		want    string
	}{
		// The peer, headers ignored.
		{"NoTrustedIgnoresXFF", "203.0.113.7:1234", nil, []string{"X-Forwarded-For: 198.51.100.1"}, "203.0.113.7"},
		{"NoTrustedIgnoresForwarded", "203.0.113.7:1234", nil, []string{"Forwarded: for=198.51.100.1"}, "203.0.113.7"},
		{"UntrustedPeerIgnoresXFF", "203.0.113.7:1234", proxies, []string{"X-Forwarded-For: 198.51.100.1"}, "203.0.113.7"},
		{"UntrustedPeerIgnoresForwarded", "203.0.113.7:1234", proxies, []string{"Forwarded: for=198.51.100.1"}, "203.0.113.7"},
		{"TrustedPeerNoHeader", "10.0.0.1:80", proxies, nil, "10.0.0.1"},
		{"TrustedPeerEmptyXFF", "10.0.0.1:80", proxies, []string{"X-Forwarded-For: "}, "10.0.0.1"},
		{"TrustedPeerBlankXFF", "10.0.0.1:80", proxies, []string{"X-Forwarded-For:  , \t,"}, "10.0.0.1"},
		{"IPv6Peer", "[2001:db8::7]:443", nil, []string{"X-Forwarded-For: 198.51.100.1"}, "2001:db8::7"},
		{"RemoteAddrWithoutPort", "203.0.113.7", proxies, []string{"X-Forwarded-For: 198.51.100.1"}, "203.0.113.7"},
		{"IPv6RemoteAddrWithoutPort", "2001:db8::7", nil, nil, "2001:db8::7"},
		{"TrustedRemoteAddrWithoutPort", "10.0.0.1", proxies, []string{"X-Forwarded-For: 203.0.113.7"}, "203.0.113.7"},

		// X-Forwarded-For.
		{"OneProxy", "10.0.0.1:80", proxies, []string{"X-Forwarded-For: 203.0.113.7"}, "203.0.113.7"},
		{"TwoProxies", "10.0.0.2:80", proxies, []string{"X-Forwarded-For: 203.0.113.7, 10.0.0.1"}, "203.0.113.7"},
		{"TwoProxiesTwoLines", "10.0.0.2:80", proxies, []string{"X-Forwarded-For: 203.0.113.7", "X-Forwarded-For: 10.0.0.1"}, "203.0.113.7"},
		{"PrependedFakes", "10.0.0.2:80", proxies, []string{"X-Forwarded-For: 198.51.100.1, 198.51.100.2, 203.0.113.7, 10.0.0.1"}, "203.0.113.7"},
		{"PrependedFakeLine", "10.0.0.2:80", proxies, []string{"X-Forwarded-For: 198.51.100.1", "X-Forwarded-For: 203.0.113.7, 10.0.0.1"}, "203.0.113.7"},
		{"PrependedTrustedFake", "10.0.0.1:80", proxies, []string{"X-Forwarded-For: 10.9.9.9, 203.0.113.7"}, "203.0.113.7"},
		{"AllTrustedLeftmost", "10.0.0.1:80", proxies, []string{"X-Forwarded-For: 10.0.0.3, 10.0.0.2"}, "10.0.0.3"},
		{"Ports", "10.0.0.2:80", proxies, []string{"X-Forwarded-For: 203.0.113.7:5555, 10.0.0.1:80"}, "203.0.113.7"},
		{"Spaces", "10.0.0.2:80", proxies, []string{"X-Forwarded-For:  203.0.113.7 ,\t10.0.0.1 "}, "203.0.113.7"},
		{"EmptyElements", "10.0.0.2:80", proxies, []string{"X-Forwarded-For: ,203.0.113.7,, 10.0.0.1,"}, "203.0.113.7"},
		{"IPv6Entry", "10.0.0.1:80", proxies, []string{"X-Forwarded-For: 2001:db8::7"}, "2001:db8::7"},
		{"IPv6EntryBracketsPort", "10.0.0.1:80", proxies, []string{"X-Forwarded-For: [2001:db8::7]:443"}, "2001:db8::7"},
		{"IPv6EntryBrackets", "10.0.0.1:80", proxies, []string{"X-Forwarded-For: [2001:db8::7]"}, "2001:db8::7"},
		{"IPv6Chain", "[2001:db8:ffff::1]:443", proxies, []string{"X-Forwarded-For: 203.0.113.7, 2001:db8:ffff::2"}, "203.0.113.7"},
		{"GarbageStops", "10.0.0.2:80", proxies, []string{"X-Forwarded-For: 203.0.113.7, garbage, 10.0.0.1"}, "10.0.0.1"},
		{"GarbageNearest", "10.0.0.2:80", proxies, []string{"X-Forwarded-For: 203.0.113.7, unknown"}, "10.0.0.2"},
		{"GarbageLeftOfClient", "10.0.0.2:80", proxies, []string{"X-Forwarded-For: nonsense, 203.0.113.7, 10.0.0.1"}, "203.0.113.7"},
		{"IPv4InBrackets", "10.0.0.2:80", proxies, []string{"X-Forwarded-For: 198.51.100.1, [203.0.113.7]:80"}, "10.0.0.2"},
		{"PortOutOfRange", "10.0.0.2:80", proxies, []string{"X-Forwarded-For: 198.51.100.1, 203.0.113.7:99999"}, "10.0.0.2"},
		{"LeadingZeros", "10.0.0.2:80", proxies, []string{"X-Forwarded-For: 198.51.100.1, 010.0.0.1"}, "10.0.0.2"},
		{"UnbracketedIPv6Port", "10.0.0.2:80", proxies, []string{"X-Forwarded-For: 198.51.100.1, 2001:db8::7:80"}, "2001:db8::7:80"},

		// v4-mapped addresses and zones.
		{"MappedEntry", "10.0.0.1:80", proxies, []string{"X-Forwarded-For: ::ffff:203.0.113.7"}, "203.0.113.7"},
		{"MappedTrustedEntry", "10.0.0.2:80", proxies, []string{"X-Forwarded-For: 203.0.113.7, [::ffff:10.0.0.1]:80"}, "203.0.113.7"},
		{"MappedTrustedPeer", "[::ffff:10.0.0.1]:80", proxies, []string{"X-Forwarded-For: 203.0.113.7"}, "203.0.113.7"},
		{"MappedUntrustedPeer", "[::ffff:203.0.113.7]:80", nil, nil, "203.0.113.7"},
		{"MappedTrustedPrefix", "10.0.0.1:80", prefixes("::ffff:10.0.0.0/104"), []string{"X-Forwarded-For: 203.0.113.7"}, "203.0.113.7"},
		{"ZonedTrustedPeer", "[fe80::1%eth0]:80", prefixes("fe80::/10"), []string{"X-Forwarded-For: 203.0.113.7"}, "203.0.113.7"},
		{"ZonedUntrustedPeer", "[fe80::1%eth0]:80", nil, nil, "fe80::1"},
		{"ZonedEntry", "10.0.0.1:80", proxies, []string{"X-Forwarded-For: fe80::7%eth1"}, "fe80::7"},

		// Forwarded.
		{"Forwarded", "10.0.0.1:80", proxies, []string{"Forwarded: for=203.0.113.7"}, "203.0.113.7"},
		{"ForwardedQuotedPort", "10.0.0.1:80", proxies, []string{`Forwarded: for="203.0.113.7:47011"`}, "203.0.113.7"},
		{"ForwardedIPv6Port", "10.0.0.1:80", proxies, []string{`Forwarded: for="[2001:db8:cafe::17]:4711"`}, "2001:db8:cafe::17"},
		{"ForwardedIPv6", "10.0.0.1:80", proxies, []string{`Forwarded: for="[2001:db8:cafe::17]"`}, "2001:db8:cafe::17"},
		{"ForwardedMappedIPv6", "10.0.0.1:80", proxies, []string{`Forwarded: for="[::ffff:203.0.113.7]"`}, "203.0.113.7"},
		{"ForwardedUnquotedIPv6", "10.0.0.1:80", proxies, []string{"Forwarded: for=2001:db8::7"}, "2001:db8::7"},
		{"ForwardedUnquotedPort", "10.0.0.1:80", proxies, []string{"Forwarded: for=203.0.113.7:47011"}, "203.0.113.7"},
		{"ForwardedObfuscatedPort", "10.0.0.1:80", proxies, []string{`Forwarded: for="203.0.113.7:_p1"`}, "203.0.113.7"},
		{"ForwardedMixedCase", "10.0.0.1:80", proxies, []string{"Forwarded: PROTO=https;For=203.0.113.7;BY=10.0.0.1"}, "203.0.113.7"},
		{"ForwardedWhitespace", "10.0.0.1:80", proxies, []string{"Forwarded:  for = 203.0.113.7 ;; proto=https ; "}, "203.0.113.7"},
		{"ForwardedQuotedPair", "10.0.0.1:80", proxies, []string{`Forwarded: for="203.0.113.\7"`}, "203.0.113.7"},
		{"ForwardedChain", "10.0.0.2:80", proxies, []string{`Forwarded: for=203.0.113.7;proto=https, for="[2001:db8:ffff::1]:80", for=10.0.0.1`}, "203.0.113.7"},
		{"ForwardedLines", "10.0.0.2:80", proxies, []string{"Forwarded: for=203.0.113.7", "Forwarded: for=10.0.0.1;proto=https"}, "203.0.113.7"},
		{"ForwardedPrependedFakes", "10.0.0.2:80", proxies, []string{"Forwarded: for=198.51.100.1, for=203.0.113.7;proto=http, for=10.0.0.1"}, "203.0.113.7"},
		{"ForwardedEmptyElements", "10.0.0.1:80", proxies, []string{"Forwarded: for=198.51.100.1,, for=203.0.113.7 ,"}, "203.0.113.7"},
		{"ForwardedCommaInOtherParam", "10.0.0.2:80", proxies, []string{`Forwarded: for=203.0.113.7;ext="a, for=198.51.100.1", for=10.0.0.1`}, "203.0.113.7"},
		// Most proxies append to X-Forwarded-For and pass a client's own
		// Forwarded through: X-Forwarded-For wins when both are there.
		{"XFFBeatsForwarded", "10.0.0.1:80", proxies, []string{"X-Forwarded-For: 198.51.100.1", "Forwarded: for=203.0.113.7"}, "198.51.100.1"},
		{"XFFBeatsTrustedForwarded", "10.0.0.1:80", proxies, []string{"X-Forwarded-For: 198.51.100.1", "Forwarded: for=10.0.0.3"}, "198.51.100.1"},
		{"BlankXFFFallsBackToForwarded", "10.0.0.1:80", proxies, []string{"X-Forwarded-For:  ", "Forwarded: for=203.0.113.7"}, "203.0.113.7"},
		{"BlankForwardedFallsBackToXFF", "10.0.0.1:80", proxies, []string{"Forwarded:  ", "X-Forwarded-For: 203.0.113.7"}, "203.0.113.7"},
		{"ForwardedUnknown", "10.0.0.2:80", proxies, []string{"Forwarded: for=198.51.100.1, for=unknown, for=10.0.0.1"}, "10.0.0.1"},
		{"ForwardedObfuscated", "10.0.0.2:80", proxies, []string{"Forwarded: for=198.51.100.1, for=_hidden"}, "10.0.0.2"},
		{"ForwardedObfuscatedQuoted", "10.0.0.2:80", proxies, []string{`Forwarded: for=198.51.100.1, for="_hidden:_port"`}, "10.0.0.2"},
		{"ForwardedNoFor", "10.0.0.2:80", proxies, []string{"Forwarded: for=198.51.100.1, proto=https;by=10.0.0.2"}, "10.0.0.2"},
		{"ForwardedTwoFors", "10.0.0.2:80", proxies, []string{"Forwarded: for=10.0.0.3;for=198.51.100.1"}, "10.0.0.2"},
		{"ForwardedEmptyFor", "10.0.0.2:80", proxies, []string{`Forwarded: for=198.51.100.1, for=""`}, "10.0.0.2"},
		{"ForwardedNoEquals", "10.0.0.2:80", proxies, []string{"Forwarded: for=198.51.100.1, for"}, "10.0.0.2"},
		{"ForwardedDoubleEquals", "10.0.0.2:80", proxies, []string{"Forwarded: for=198.51.100.1, for==203.0.113.7"}, "10.0.0.2"},
		{"ForwardedJunkAfterValue", "10.0.0.2:80", proxies, []string{"Forwarded: for=198.51.100.1, for=203.0.113.7 junk"}, "10.0.0.2"},
		{"ForwardedCommaInFor", "10.0.0.2:80", proxies, []string{`Forwarded: for="198.51.100.1, 203.0.113.7"`}, "10.0.0.2"},
		{"ForwardedIPv4InBrackets", "10.0.0.2:80", proxies, []string{`Forwarded: for="[203.0.113.7]"`}, "10.0.0.2"},
		{"ForwardedBadPort", "10.0.0.2:80", proxies, []string{`Forwarded: for="203.0.113.7:123456"`}, "10.0.0.2"},
		{"ForwardedUnclosedBracket", "10.0.0.2:80", proxies, []string{`Forwarded: for="[2001:db8::7"`}, "10.0.0.2"},
		{"ForwardedUnterminatedQuote", "10.0.0.2:80", proxies, []string{`Forwarded: for=198.51.100.1, for="203.0.113.7`}, "10.0.0.2"},
		{"ForwardedUnterminatedLineIsolated", "10.0.0.2:80", proxies, []string{`Forwarded: for="198.51.100.1`, "Forwarded: for=203.0.113.7"}, "203.0.113.7"},
		// A client's open quote does not swallow an element a proxy
		// appended to the same line.
		{"ForwardedOpenQuoteAppended", "10.0.0.1:80", proxies, []string{`Forwarded: for="198.51.100.1, for=203.0.113.7`}, "203.0.113.7"},
		{"ForwardedOpenQuoteAppendedQuoted", "10.0.0.1:80", proxies, []string{`Forwarded: for="198.51.100.1, for="[2001:db8::7]:80"`}, "2001:db8::7"},
		{"ForwardedOpenQuoteEscapedComma", "10.0.0.1:80", proxies, []string{`Forwarded: for="198.51.100.1\, for=203.0.113.7`}, "203.0.113.7"},

		// At most maxForwardHops entries are read.
		{"HopsUpToBound", "10.255.0.1:80", proxies, []string{"X-Forwarded-For: 203.0.113.7, " + chain(maxForwardHops-1)}, "203.0.113.7"},
		{"HopsPastBound", "10.255.0.1:80", proxies, []string{"X-Forwarded-For: 203.0.113.7, " + chain(maxForwardHops)}, "10.0.0.0"},
		{"HopsPastBoundLines", "10.255.0.1:80", proxies, []string{"X-Forwarded-For: 203.0.113.7", "X-Forwarded-For: " + chain(maxForwardHops)}, "10.0.0.0"},
		{"ManyFakes", "10.0.0.1:80", proxies, []string{"X-Forwarded-For: " + strings.Repeat("198.51.100.1, ", 10000) + "203.0.113.7"}, "203.0.113.7"},
		{"ManyForwardedFakes", "10.0.0.1:80", proxies, []string{"Forwarded: " + strings.Repeat(`for="198.51.100.1", `, 10000) + "for=203.0.113.7"}, "203.0.113.7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newClientRequest(t, tt.remote, tt.headers...)
			got, err := clientAddr(r, tt.trusted, "")
			if err != nil || got != netip.MustParseAddr(tt.want) {
				t.Errorf("clientAddr(RemoteAddr %q, %q, trusted %v) = %v, %v; want %s, nil",
					tt.remote, tt.headers, tt.trusted, got, err, tt.want)
			}
		})
	}
}

func TestClientAddrNoAddress(t *testing.T) {
	t.Parallel()
	for _, remote := range []string{"", "garbage", "@", "pipe", "[::1]", "1.2.3.4:99999", "1.2.3.4:", ":80", "[1.2.3.4]:80", "example.com:80"} {
		r := newClientRequest(t, remote, "X-Forwarded-For: 203.0.113.7")
		got, err := clientAddr(r, prefixes("0.0.0.0/0", "::/0"), "")
		if !errors.Is(err, errNoClientAddr) || got.IsValid() {
			t.Errorf("clientAddr(RemoteAddr %q) = %v, %v; want the zero Addr and an error matching errNoClientAddr", remote, got, err)
		}
	}
	if got, err := clientAddr(nil, nil, ""); !errors.Is(err, errNoClientAddr) || got.IsValid() {
		t.Errorf("clientAddr(nil) = %v, %v; want the zero Addr and an error matching errNoClientAddr", got, err)
	}
}

func TestKeyOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr   string
		v6Bits int
		want   string
	}{
		{"203.0.113.7", 64, "203.0.113.7"},
		{"203.0.113.7", 128, "203.0.113.7"},
		{"203.0.113.7", 8, "203.0.113.7"},
		{"::ffff:203.0.113.7", 64, "203.0.113.7"},
		{"::ffff:203.0.113.7", 128, "203.0.113.7"},
		{"2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", 64, "2001:db8:1:3::/64"},
		{"2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"},
		{"2001:db8:1:2:3:4:5:6", 56, "2001:db8:1::/56"},
		{"2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6"},
		{"2001:db8:1:2:3:4:5:6", 1, "::/1"},
		// Out of range counts as the default, 64.
		{"2001:db8:1:2:3:4:5:6", 0, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:3:4:5:6", -1, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:3:4:5:6", 129, "2001:db8:1:2::/64"},
		{"fe80::1:2:3:4%eth0", 64, "fe80::/64"},
		{"fe80::1:2:3:4%eth0", 128, "fe80::1:2:3:4"},
		{"::1", 128, "::1"},
	}
	for _, tt := range tests {
		if got := keyOf(netip.MustParseAddr(tt.addr), tt.v6Bits); got != tt.want {
			t.Errorf("keyOf(%s, %d) = %q, want %q", tt.addr, tt.v6Bits, got, tt.want)
		}
	}
	if got := keyOf(netip.Addr{}, 64); got != "" {
		t.Errorf("keyOf(zero Addr, 64) = %q, want %q", got, "")
	}
}

func FuzzClientAddr(f *testing.F) {
	f.Add("203.0.113.7:1234", "198.51.100.1", "")
	f.Add("10.0.0.1:80", "203.0.113.7, 10.0.0.2", `for="[2001:db8::1]:80";proto=https, for=unknown`)
	f.Add("[::ffff:10.0.0.1]:80", "[2001:db8::7]:443,,", `For="\"x, for=_hidden`)
	f.Add("fe80::1%eth0", " , ", `for="198.51.100.1\`)
	f.Add("garbage", "unknown", ";;=,")
	f.Fuzz(func(t *testing.T, remoteAddr, xff, forwarded string) {
		r := &http.Request{RemoteAddr: remoteAddr, Header: http.Header{
			"X-Forwarded-For": {xff},
			"Forwarded":       {forwarded},
		}}

		var peer netip.Addr
		if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
			peer = ap.Addr()
		} else if a, err := netip.ParseAddr(remoteAddr); err == nil {
			peer = a
		}
		peer = peer.Unmap().WithZone("")

		got, err := clientAddr(r, nil, "")
		if !peer.IsValid() {
			if !errors.Is(err, errNoClientAddr) {
				t.Fatalf("clientAddr(RemoteAddr %q) = %v, %v; want an error matching errNoClientAddr", remoteAddr, got, err)
			}
			return
		}
		if err != nil || got != peer {
			t.Fatalf("clientAddr(RemoteAddr %q, no trusted) = %v, %v; want the peer %v", remoteAddr, got, err, peer)
		}

		got, err = clientAddr(r, prefixes("0.0.0.0/0", "::/0"), "")
		if err != nil || !got.IsValid() || got.Is4In6() || got.Zone() != "" {
			t.Fatalf("clientAddr(RemoteAddr %q, XFF %q, Forwarded %q, all trusted) = %v, %v; want a valid, unmapped, unzoned address",
				remoteAddr, xff, forwarded, got, err)
		}
		if keyOf(got, 64) == "" {
			t.Fatalf("keyOf(%v, 64) is empty", got)
		}

		// Whatever a client sends, the entry its trusted proxy appends
		// decides.
		proxies := prefixes("10.0.0.0/8")
		for _, tc := range []struct {
			name, value, want string
		}{
			{"X-Forwarded-For", xff + ", 203.0.113.9", "203.0.113.9"},
			{"Forwarded", forwarded + ", for=203.0.113.9", "203.0.113.9"},
			{"Forwarded", forwarded + `, for="[2001:db8::9]:80"`, "2001:db8::9"},
		} {
			r := &http.Request{RemoteAddr: "10.0.0.1:80", Header: http.Header{tc.name: {tc.value}}}
			got, err := clientAddr(r, proxies, "")
			if err != nil || got != netip.MustParseAddr(tc.want) {
				t.Fatalf("clientAddr(%s: %q) = %v, %v; want %s", tc.name, tc.value, got, err, tc.want)
			}
		}
	})
}
