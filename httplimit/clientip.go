package httplimit

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// errNoClientAddr is returned, wrapped, when a request's RemoteAddr is not
// an IP address (with or without a port), so that it has no client address
// to key on.
var errNoClientAddr = errors.New("httplimit: no client address")

// maxForwardHops is how many entries of a forwarding header clientAddr
// reads, counted from the right. Entries to the left of them are treated
// as absent: when the nearest maxForwardHops entries are all trusted
// proxies, the leftmost of them is the client. No real chain of trusted
// proxies is that long, and a client cannot use the bound to choose its
// address, since everything it sends lies to the left of the entry its
// first trusted proxy appends, which is always read.
const maxForwardHops = 64

// clientAddr returns the address of the client that sent r: the peer of
// the connection (r.RemoteAddr, port stripped), or, when that peer is a
// trusted proxy, the first untrusted address found walking the forwarding
// header from the right.
//
// The forwarding header is header when it is set ("Forwarded" or
// "X-Forwarded-For"); when it is "", it is X-Forwarded-For when r has one
// with a non-blank value, which most proxies append to, and Forwarded
// (RFC 7239) otherwise. Walking
// from the right, entries inside a trusted prefix are skipped; the first
// address outside every trusted prefix is the client. An entry that is
// not an address ("unknown", an obfuscated "_name", an element without
// exactly one for= parameter, anything malformed) ends the walk: the
// result is then the nearest trusted hop to its right, starting with the
// peer, and never anything to its left, which whoever wrote the entry
// could have chosen. When every entry read is trusted, the result is the
// leftmost one (see [maxForwardHops]). Empty list elements are ignored, as
// RFC 9110 asks.
//
// A trusted proxy must therefore append to (or replace) the header that
// clientAddr reads: with header "", a proxy that sets only Forwarded must
// remove any X-Forwarded-For field its client sent, or that client chooses
// its address; naming the header avoids that.
//
// The result is unmapped (an IPv4-mapped IPv6 address becomes IPv4) and
// has no zone; trusted prefixes written as IPv4-mapped IPv6 (at least
// /96) match the corresponding IPv4 addresses. clientAddr never panics,
// its work is linear in the size of the headers, and it parses at most
// maxForwardHops entries.
func clientAddr(r *http.Request, trusted []netip.Prefix, header string) (netip.Addr, error) {
	if r == nil {
		return netip.Addr{}, fmt.Errorf("%w: nil request", errNoClientAddr)
	}
	peer, ok := parseRemoteAddr(r.RemoteAddr)
	if !ok {
		// The value is left out: it may be a client's address.
		return netip.Addr{}, fmt.Errorf("%w: RemoteAddr is not an IP address", errNoClientAddr)
	}
	if !isTrustedAddr(peer, trusted) {
		return peer, nil
	}

	var hops forwardHops
	parse := parseXFFEntry
	if lines := r.Header.Values("Forwarded"); header == "Forwarded" || header == "" && !hasContent(r.Header.Values("X-Forwarded-For")) {
		parse = parseForwardedElement
		for _, line := range lines {
			hops.addForwardedLine(line)
		}
	} else {
		for _, line := range r.Header.Values("X-Forwarded-For") {
			hops.addList(line)
		}
	}

	last := peer
	for i := range hops.len() {
		a, ok := parse(hops.fromRight(i))
		if !ok {
			return last, nil
		}
		if !isTrustedAddr(a, trusted) {
			return a, nil
		}
		last = a
	}
	return last, nil
}

// keyOf returns the limiter key for a client address: an IPv4 address as
// it is ("203.0.113.7"); an IPv6 address grouped by its first v6Bits bits
// as a prefix ("2001:db8:1:2::/64"), or the address itself when v6Bits is 128.
// IPv4-mapped IPv6 addresses are unmapped first and treated as IPv4. Zones are dropped.
//
// A v6Bits outside 1 to 128 counts as 64, so that a zero value never puts
// every IPv6 client under one key. The zero Addr has the key "".
func keyOf(a netip.Addr, v6Bits int) string {
	a = a.Unmap().WithZone("")
	switch {
	case !a.IsValid():
		return ""
	case a.Is4():
		return a.String()
	}
	if v6Bits < 1 || v6Bits > 128 {
		v6Bits = 64
	}
	if v6Bits == 128 {
		return a.String()
	}
	p, err := a.Prefix(v6Bits)
	if err != nil { // unreachable: a is IPv6 and v6Bits in range
		return a.String()
	}
	return p.String()
}

// parseRemoteAddr parses an http.Request's RemoteAddr: "ip:port",
// "[ipv6]:port" or a bare IP address.
func parseRemoteAddr(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return normalizeAddr(ap.Addr()), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return normalizeAddr(a), true
	}
	return netip.Addr{}, false
}

// normalizeAddr unmaps a and drops its zone: netip.Prefix.Contains never
// matches a zoned address, nor an IPv4-mapped one against an IPv4 prefix.
func normalizeAddr(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

// isTrustedAddr reports whether a, normalized, lies inside one of trusted.
func isTrustedAddr(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// hasContent reports whether any of the field lines is not blank.
func hasContent(lines []string) bool {
	for _, l := range lines {
		if trimOWS(l) != "" {
			return true
		}
	}
	return false
}

// forwardHops keeps the last maxForwardHops non-empty entries of a
// forwarding header, as unparsed substrings of it. The zero value is empty.
type forwardHops struct {
	ring [maxForwardHops]string
	n    int // entries added; the ring holds the last min(n, maxForwardHops)
}

func (h *forwardHops) add(entry string) {
	entry = trimOWS(entry)
	if entry == "" {
		return
	}
	h.ring[h.n%maxForwardHops] = entry
	h.n++
}

func (h *forwardHops) len() int { return min(h.n, maxForwardHops) }

// fromRight returns the i-th entry counted from the right, from 0.
func (h *forwardHops) fromRight(i int) string {
	return h.ring[(h.n-1-i)%maxForwardHops]
}

// addList adds the comma-separated elements of one X-Forwarded-For line.
func (h *forwardHops) addList(line string) {
	for {
		i := strings.IndexByte(line, ',')
		if i < 0 {
			h.add(line)
			return
		}
		h.add(line[:i])
		line = line[i+1:]
	}
}

// addForwardedLine adds the elements of one Forwarded field line, split at
// the commas outside quoted strings. Each line is split on its own, so a
// quote a client leaves open cannot swallow a line a proxy added.
//
// A proxy that appends its element to a client's line as text can still
// find it after a quote the client left open; so when a quoted string is
// still open at the end of the line, the rest of the line, from the start
// of the element that opened it, is split at every comma instead. The
// open element then fails to parse, and the proxy's element, which has no
// comma, stays whole.
func (h *forwardHops) addForwardedLine(line string) {
	start, quoted, escaped := 0, false, false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case escaped:
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case !quoted && c == ',':
			h.add(line[start:i])
			start = i + 1
		}
	}
	if quoted {
		h.addList(line[start:])
		return
	}
	h.add(line[start:])
}

// parseXFFEntry parses one X-Forwarded-For entry: an IP address, "ip:port"
// for IPv4, or "[ipv6]" with or without ":port".
func parseXFFEntry(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return normalizeAddr(a), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return normalizeAddr(ap.Addr()), true
	}
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return normalizeAddr(a), true
		}
	}
	return netip.Addr{}, false
}

// parseForwardedElement returns the address in the for= parameter of one
// Forwarded element (RFC 7239, section 4): pairs separated by ";", each a
// token (case-insensitive), "=", and a token or a quoted string. It fails
// on a malformed element, and on one with no for= or more than one, so
// that a hop the proxy did not name ends the walk like "unknown" does.
//
// It is lenient where proxies commonly are: whitespace around pairs and
// "=", and an unquoted value holding ":" or brackets (for=192.0.2.1:80).
func parseForwardedElement(s string) (netip.Addr, bool) {
	var node string
	found := false
	for {
		s = trimOWS(s)
		if s == "" {
			break
		}
		if s[0] == ';' {
			s = s[1:] // an empty pair
			continue
		}
		n := tokenLen(s)
		if n == 0 {
			return netip.Addr{}, false
		}
		name := s[:n]
		s = trimOWS(s[n:])
		if s == "" || s[0] != '=' {
			return netip.Addr{}, false
		}
		s = trimOWS(s[1:])
		var value string
		if s != "" && s[0] == '"' {
			var ok bool
			if value, s, ok = unquote(s); !ok {
				return netip.Addr{}, false
			}
		} else {
			n = valueLen(s)
			if n == 0 {
				return netip.Addr{}, false
			}
			value, s = s[:n], s[n:]
		}
		s = trimOWS(s)
		if s != "" && s[0] != ';' {
			return netip.Addr{}, false
		}
		if strings.EqualFold(name, "for") {
			if found {
				return netip.Addr{}, false
			}
			node, found = value, true
		}
	}
	if !found {
		return netip.Addr{}, false
	}
	return parseForwardedNode(node)
}

// parseForwardedNode parses a for= value: an IPv4 address or "[ipv6]",
// either with ":port" (up to five digits, or an obfuscated "_name"), or a
// bare IPv6 address. "unknown" and obfuscated identifiers ("_hidden") are
// not addresses.
func parseForwardedNode(s string) (netip.Addr, bool) {
	var host, port string
	if s != "" && s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.Addr{}, false
		}
		host, port = s[1:end], s[end+1:]
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() {
			return netip.Addr{}, false
		}
		if port != "" && (port[0] != ':' || !validNodePort(port[1:])) {
			return netip.Addr{}, false
		}
		return normalizeAddr(a), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return normalizeAddr(a), true // IPv4, or IPv6 without brackets
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.Addr{}, false
	}
	host, port = s[:i], s[i+1:]
	a, err := netip.ParseAddr(host)
	if err != nil || !a.Is4() || !validNodePort(port) {
		return netip.Addr{}, false
	}
	return a, true
}

// validNodePort reports whether s is an RFC 7239 node-port: 1 to 5
// digits, or "_" followed by letters, digits, ".", "_" or "-".
func validNodePort(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '_' {
		for i := 1; i < len(s); i++ {
			c := s[i]
			if !isAlnum(c) && c != '.' && c != '_' && c != '-' {
				return false
			}
		}
		return len(s) > 1
	}
	if len(s) > 5 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// unquote reads the quoted string at the start of s and returns its value
// with quoted pairs resolved, and what follows it.
func unquote(s string) (value, rest string, ok bool) {
	var b []byte // nil until a quoted pair is seen
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			if b == nil {
				return s[1:i], s[i+1:], true
			}
			return string(b), s[i+1:], true
		case '\\':
			if b == nil {
				b = append(make([]byte, 0, len(s)), s[1:i]...)
			}
			i++
			if i == len(s) {
				return "", "", false
			}
			b = append(b, s[i])
		default:
			if b != nil {
				b = append(b, c)
			}
		}
	}
	return "", "", false
}

// tokenLen returns the length of the RFC 9110 token at the start of s.
func tokenLen(s string) int {
	for i := 0; i < len(s); i++ {
		if !isTchar(s[i]) {
			return i
		}
	}
	return len(s)
}

// valueLen returns the length of the unquoted value at the start of s: a
// token, leniently also holding ":", "[" and "]".
func valueLen(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isTchar(c) && c != ':' && c != '[' && c != ']' {
			return i
		}
	}
	return len(s)
}

func isTchar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// trimOWS trims the optional whitespace (spaces and tabs) of RFC 9110.
func trimOWS(s string) string {
	return strings.Trim(s, " \t")
}
