package luascript

import (
	"strings"
	"testing"
	"time"
)

// Each distinct body is defined once, and the parts' arguments follow each
// other from ARGV[4], in order.
func TestAssemble(t *testing.T) {
	a := "local function decide(key, now, n, x) return true, nil end -- A"
	b := "local function decide(key, now, n) return true, nil end -- B"
	src := Assemble([]string{a, b, a}, []int{1, 0, 1}, 1500*time.Millisecond)
	for body, want := range map[string]int{a: 1, b: 1} {
		if got := strings.Count(src, body); got != want {
			t.Errorf("body %q defined %d times, want %d", body[len(body)-4:], got, want)
		}
	}
	lacks(t, src,
		"decide1(KEYS[1], now, n, ARGV[4])",
		"decide2(KEYS[2], now, n)",
		"decide1(KEYS[3], now, n, ARGV[5])",
		"local ok = a1 and a2 and a3 and consume",
		"return {a1 and 1 or 0, r1, t1, e1, a2 and 1 or 0, r2, t2, e2, a3 and 1 or 0, r3, t3, e3}",
	)
	if !strings.Contains(src, "local ttl_margin = 1500\n") {
		t.Errorf("assembled script does not set ttl_margin to 1.5s in ms:\n%s", src)
	}
}

// In the modes Debit and Refund every part writes with consume set and
// the signed cost, then decides again with a cost of 1, which the final
// writes see too.
func TestAssembleCharges(t *testing.T) {
	a := "local function decide(key, now, n, x) return true, nil end -- A"
	src := Assemble([]string{a, a}, []int{1, 1}, time.Second)
	lacks(t, src,
		"if mode == 'd' or mode == 'r' then",
		"if mode == 'r' then c = -n end",
		"w1(true, KEYS[1], now, c, ",
		"w2(true, KEYS[2], now, c, ",
		"  n = 1\n",
		"a2, w2, s2_1, s2_2, s2_3, s2_4, s2_5, s2_6, s2_7, s2_8, s2_9, s2_10 = decide1(KEYS[2], now, n, ARGV[5])",
	)
	if i, j := strings.Index(src, "  n = 1\n"), strings.Index(src, "local ok ="); i < 0 || j < i {
		t.Errorf("the cost is not reset before the final writes:\n%s", src)
	}
}

// In a lease mode the parts decide with the lease's size, then, if one
// denies, with a cost of 1 to learn what each has left; the reply ends
// with the units consumed and the time. A give-back becomes a Refund or a
// Peek by the time.
func TestAssembleLeases(t *testing.T) {
	a := "local function decide(key, now, n, x) return true, nil end -- A"
	src := Assemble([]string{a, a}, []int{1, 1}, time.Second)
	lacks(t, src,
		"if string.byte(mode) == 108 then",
		"lease = tonumber(string.sub(mode, 2))",
		"elseif now < tonumber(string.sub(mode, 2)) then\n    mode = 'r'\n  else\n    mode = '0'",
		"if lease > n and a1 and a2 then",
		"local q1 = w1(false, KEYS[1], now, n, ",
		"if q2 < g then g = q2 end",
		"if n > need and not (a1 and a2) then",
		"return {a1 and 1 or 0, r1, t1, e1, a2 and 1 or 0, r2, t2, e2, got, now}",
	)
	if i, j := strings.Index(src, "if lease > n"), strings.Index(src, "local ok ="); i < 0 || j < i {
		t.Errorf("the lease's size is not settled before the final writes:\n%s", src)
	}
}

// lacks reports each of wants that src does not hold.
func lacks(t *testing.T, src string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(src, want) {
			t.Errorf("assembled script lacks %q:\n%s", want, src)
		}
	}
}
