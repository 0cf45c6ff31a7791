// Package luascript assembles the Lua script that a Limiter runs from
// algorithms' bodies. The root package and the benchmarks share it, so
// that both run the same source.
package luascript

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxState is the most values a body's decide may return after write.
const MaxState = 10

// prelude opens every assembled script: it reads the time, the cost and
// the mode; the TTL margin follows it.
const prelude = `local now = ARGV[1]
if now == '' then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
else
  now = tonumber(now)
end
local n = ARGV[2] + 0
local mode = ARGV[3]
local lease = 0
if #mode > 1 then
  if string.byte(mode) == 108 then
    lease = tonumber(string.sub(mode, 2))
    mode = '1'
  elseif now < tonumber(string.sub(mode, 2)) then
    mode = 'r'
  else
    mode = '0'
  end
end
local consume = mode == '1'
-- ttl_margin is how many ms past the moment its state stops mattering a
-- key must live: Redis can count a relative TTL set in a script from the
-- script's start, in whole ms, so a key would otherwise expire while its
-- state still counts.
local ttl_margin = `

// Modes of ARGV[3].
const (
	// Peek decides without consuming.
	Peek = "0"
	// Consume decides and, when every part allows, consumes the cost.
	Consume = "1"
	// Debit consumes the cost from every part, allowed or not, then
	// replies as Peek would.
	Debit = "d"
	// Refund gives the cost back to every part, then replies as Peek
	// would.
	Refund = "r"
	// LeasePrefix, followed by a number of units k, consumes as many
	// units as every part can give, from the cost to k, and replies as
	// Consume would, with two more integers: the units consumed (0 when
	// denied) and the script's time in µs.
	LeasePrefix = "l"
	// GiveBackPrefix, followed by a time in µs, gives the cost back as
	// Refund does while the script's time is before it, and from then on
	// changes nothing and replies as Peek.
	GiveBackPrefix = "g"
)

// Assemble returns the source of the script that runs bodies, one per
// part (KEYS[i] for body i), where argc[i] is how many arguments body i
// takes. The script reads ARGV[1] (now in µs, or "" for Redis TIME),
// ARGV[2] (the cost) and ARGV[3] (the mode: [Peek], [Consume], [Debit] or
// [Refund]), and the parts' arguments follow each other from ARGV[4]. It
// replies with four integers per part, in order.
//
// In the modes Debit and Refund every part decides with the cost and
// writes with consume set, whatever it decided, and the cost as it is
// (Debit) or negated (Refund); then every part decides again with a cost
// of 1 and writes without consuming, which gives the reply. Each distinct body is defined once, in a block of
// its own, and the parts run as plain calls to decide and write: a
// decision makes no closure but the bodies' own functions. The bodies
// read margin, in whole ms, as ttl_margin.
func Assemble(bodies []string, argc []int, margin time.Duration) string {
	var b strings.Builder
	b.WriteString(prelude)
	b.WriteString(strconv.FormatInt(margin.Milliseconds(), 10) + "\n")
	index := map[string]int{}
	order := make([]int, len(bodies))
	for p, body := range bodies {
		i, ok := index[body]
		if !ok {
			i = len(index) + 1
			index[body] = i
			fmt.Fprintf(&b, "local decide%d\ndo\n%s\ndecide%d = decide\nend\n", i, body, i)
		}
		order[p] = i
	}
	at := 4
	var allowed, reply []string
	argNames := make([][]string, len(bodies))
	for p := range bodies {
		k := p + 1
		args := make([]string, argc[p])
		for i := range args {
			args[i] = fmt.Sprintf("ARGV[%d]", at+i)
		}
		argNames[p] = args
		at += argc[p]
		fmt.Fprintf(&b, "local a%d, w%d, %s = decide%d(%s)\n", k, k, state(k), order[p],
			strings.Join(append([]string{fmt.Sprintf("KEYS[%d]", k), "now", "n"}, args...), ", "))
		allowed = append(allowed, fmt.Sprintf("a%d", k))
		reply = append(reply, fmt.Sprintf("a%d and 1 or 0, r%d, t%d, e%d", k, k, k, k))
	}
	b.WriteString("if mode == 'd' or mode == 'r' then\n  local c = n\n  if mode == 'r' then c = -n end\n")
	for p := range bodies {
		k := p + 1
		fmt.Fprintf(&b, "  w%d(true, KEYS[%d], now, c, %s)\n", k, k, state(k))
	}
	b.WriteString("  n = 1\n")
	for p := range bodies {
		k := p + 1
		fmt.Fprintf(&b, "  a%d, w%d, %s = decide%d(%s)\n", k, k, state(k), order[p],
			strings.Join(append([]string{fmt.Sprintf("KEYS[%d]", k), "now", "n"}, argNames[p]...), ", "))
	}
	b.WriteString("end\n")
	all := strings.Join(allowed, " and ")
	redecide := func(indent string) {
		for p := range bodies {
			k := p + 1
			fmt.Fprintf(&b, "%sa%d, w%d, %s = decide%d(%s)\n", indent, k, k, state(k), order[p],
				strings.Join(append([]string{fmt.Sprintf("KEYS[%d]", k), "now", "n"}, argNames[p]...), ", "))
		}
	}
	fmt.Fprintf(&b, "if lease > n and %s then\n  local need = n\n  n = lease\n", all)
	redecide("  ")
	fmt.Fprintf(&b, "  if not (%s) then\n    n = 1\n", all)
	redecide("    ")
	b.WriteString("    local g = lease\n")
	for p := range bodies {
		k := p + 1
		fmt.Fprintf(&b, "    local q%d = w%d(false, KEYS[%d], now, n, %s)\n    if q%d < g then g = q%d end\n", k, k, k, state(k), k, k)
	}
	b.WriteString("    n = need\n    if g > need then n = g end\n")
	redecide("    ")
	fmt.Fprintf(&b, "    if n > need and not (%s) then\n      n = need\n", all)
	redecide("      ")
	b.WriteString("    end\n  end\nend\n")
	fmt.Fprintf(&b, "local ok = %s and consume\n", all)
	for p := range bodies {
		k := p + 1
		fmt.Fprintf(&b, "local r%d, t%d, e%d = w%d(ok, KEYS[%d], now, n, %s)\n", k, k, k, k, k, state(k))
	}
	fmt.Fprintf(&b, "if lease > 0 then\n  local got = 0\n  if ok then got = n end\n  return {%s, got, now}\nend\n", strings.Join(reply, ", "))
	fmt.Fprintf(&b, "return {%s}\n", strings.Join(reply, ", "))
	return b.String()
}

// state returns the names of part k's state values, joined.
func state(k int) string {
	s := make([]string, MaxState)
	for i := range s {
		s[i] = fmt.Sprintf("s%d_%d", k, i+1)
	}
	return strings.Join(s, ", ")
}
