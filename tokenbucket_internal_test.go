package redislimit

import (
	"math/big"
	"math/rand/v2"
	"testing"
)

// ratOf returns w + f/d as a rational.
func ratOf(w, f, d int64) *big.Rat {
	r := big.NewRat(f, d)
	return r.Add(r, new(big.Rat).SetInt64(w))
}

// The interval arithmetic is exact: times and inUse agree with rational
// arithmetic for counts up to 2^50 and denominators up to maxDenom.
func TestIntervalArithmetic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	checked := 0
	for i := 0; i < 20000; i++ {
		d := 1 + rng.Int64N(maxDenom)
		if i%4 == 0 {
			d = maxDenom - rng.Int64N(3)
		}
		r := rng.Int64N(d)
		if g := gcd(r, d); g > 1 {
			r, d = r/g, d/g
		}
		// A span of up to MaxWindow over m intervals.
		m := 1 + rng.Int64N(1<<50)
		if i%3 == 0 {
			m = 1 + rng.Int64N(1000)
		}
		q := rng.Int64N(maxMicros/m + 1)
		if q == 0 && r == 0 {
			q = 1
		}
		iv := interval{q: q, r: r, d: d}
		if !iv.fills(m, maxMicros) {
			continue
		}
		checked++
		ivr := ratOf(q, r, d)
		w, f := iv.times(m)
		want := new(big.Rat).Mul(ivr, new(big.Rat).SetInt64(m))
		if f < 0 || f >= d || ratOf(w, f, d).Cmp(want) != 0 {
			t.Fatalf("%v.times(%d) = %d + %d/%d, want %v", iv, m, w, f, d, want.FloatString(6))
		}
		// inUse of the span, and of it less and more a little.
		for _, x := range [][2]int64{{w, f}, {w, 0}, {w + 1, 0}, {max(w-1, 0), f}} {
			k := iv.inUse(x[0], x[1])
			span := ratOf(x[0], x[1], d)
			kr := new(big.Rat).Mul(ivr, new(big.Rat).SetInt64(k))
			prev := new(big.Rat).Mul(ivr, new(big.Rat).SetInt64(k-1))
			if kr.Cmp(span) < 0 || k > 0 && prev.Cmp(span) >= 0 {
				t.Fatalf("%v.inUse(%d + %d/%d) = %d, want ⌈span/interval⌉", iv, x[0], x[1], d, k)
			}
		}
	}
	if checked < 10000 {
		t.Errorf("only %d of 20000 random buckets fill within MaxWindow: the test checks too little", checked)
	}
}

// An interval whose denominator exceeds maxDenom is the closest fraction
// with a denominator up to maxDenom on the side asked: never shorter than
// asked (never faster) unless down, and less than 2^-26 µs away.
func TestApproxInterval(t *testing.T) {
	tests := []struct{ num, den int64 }{
		{1000, 1 << 50},                   // 2^50 per ms: far below 1/maxDenom µs
		{1_000_000, 100_000_007},          // 100,000,007 a second
		{315359999999999, 67108859},       // exact: d = maxDenom - 5
		{86_400_000_000, 1<<50 - 1},       // 2^50-1 a day
		{maxMicros, 1<<50 - 3},            // a cap of MaxWindow
		{3, 1},                            // whole
		{maxDenom + 1, maxDenom*2 + 1},    // just over the bound
		{1_000_000 * 7, 3*maxDenom + 100}, // around 2.33µs
	}
	limit := big.NewRat(1, maxDenom)
	for _, tt := range tests {
		for _, down := range []bool{false, true} {
			iv := approxInterval(big.NewInt(tt.num), big.NewInt(tt.den), down)
			x := big.NewRat(tt.num, tt.den)
			got := ratOf(iv.q, iv.r, iv.d)
			if iv.d < 1 || iv.d > maxDenom || iv.r < 0 || iv.r >= iv.d || gcd(iv.r, iv.d) != 1 && iv.r != 0 || iv.r == 0 && iv.d != 1 {
				t.Errorf("approxInterval(%d/%d, down %v) = %+v: not in lowest terms within maxDenom", tt.num, tt.den, down, iv)
				continue
			}
			diff := new(big.Rat).Sub(got, x)
			if down {
				diff.Neg(diff)
			}
			if diff.Sign() < 0 || diff.Cmp(limit) >= 0 {
				t.Errorf("approxInterval(%d/%d, down %v) = %v, off by %v: want on that side, within 2^-26", tt.num, tt.den, down, got, diff.FloatString(12))
			}
			if tt.den <= maxDenom && diff.Sign() != 0 {
				t.Errorf("approxInterval(%d/%d) = %v, want it exact", tt.num, tt.den, got)
			}
			// No fraction with a denominator up to maxDenom lies strictly
			// between: the candidates are ⌈x·e⌉/e (⌊x·e⌋/e down) for every
			// e, checked here for the denominators near maxDenom and a few
			// small ones.
			for _, e := range []int64{1, 2, 3, 7, maxDenom - 2, maxDenom - 1, maxDenom} {
				c := new(big.Rat).Mul(x, big.NewRat(e, 1))
				n := new(big.Int).Quo(c.Num(), c.Denom())
				if !down && !c.IsInt() {
					n.Add(n, big.NewInt(1))
				}
				cand := new(big.Rat).SetFrac(n, big.NewInt(e))
				if cand.Sign() == 0 {
					continue
				}
				if down && cand.Cmp(got) > 0 || !down && cand.Cmp(got) < 0 {
					t.Errorf("approxInterval(%d/%d, down %v) = %v, but %v is closer on that side", tt.num, tt.den, down, got, cand)
				}
			}
		}
	}
}
