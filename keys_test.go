package redislimit_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/internal/clock"
	"github.com/redislimit/redislimit/internal/redistest"
)

func TestHashedKeysLayout(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("203.0.113.7"))
	want := "rl:tb:{" + hex.EncodeToString(mac.Sum(nil)[:16]) + "}"

	m := redistest.Mini(t)
	c := redistest.NewClient(t, m.Addr())
	lim, err := redislimit.New(c, redislimit.TokenBucket(1, time.Second, 2), redislimit.WithHashedKeys(secret))
	if err != nil {
		t.Fatal(err)
	}
	if got := redislimit.RedisKey(lim, "203.0.113.7"); got != want {
		t.Fatalf("Redis key = %q, want %q", got, want)
	}
	long := strings.Repeat("x", redislimit.MaxKeyLen)
	if got := redislimit.RedisKey(lim, long); len(got) != len(want) {
		t.Errorf("a %d-byte key is stored as %d bytes, want %d", len(long), len(got), len(want))
	}
	other, _ := redislimit.New(c, redislimit.TokenBucket(1, time.Second, 2), redislimit.WithHashedKeys([]byte("another secret")))
	if redislimit.RedisKey(other, "203.0.113.7") == want {
		t.Error("two secrets give the same Redis key")
	}
}

// Keys an attacker chose to share one Cluster slot are spread over slots
// once hashed with a secret.
func TestHashedKeysSpreadSlots(t *testing.T) {
	target := redistest.KeySlot("a")
	var crafted []string
	for i := 0; len(crafted) < 40; i++ {
		if k := "k" + strconv.Itoa(i); redistest.KeySlot(k) == target {
			crafted = append(crafted, k)
		}
	}
	c := redistest.NewClient(t, redistest.Mini(t).Addr())
	plain, _ := redislimit.New(c, redislimit.FixedWindow(1, time.Second))
	hashed, _ := redislimit.New(c, redislimit.FixedWindow(1, time.Second), redislimit.WithHashedKeys([]byte("s3cret")))
	plainSlots, hashedSlots := map[int]bool{}, map[int]bool{}
	for _, k := range crafted {
		plainSlots[redistest.KeySlot(redislimit.RedisKey(plain, k))] = true
		hashedSlots[redistest.KeySlot(redislimit.RedisKey(hashed, k))] = true
	}
	if len(plainSlots) != 1 {
		t.Fatalf("fixture: crafted keys use %d slots without hashing, want 1", len(plainSlots))
	}
	if len(hashedSlots) < 35 {
		t.Errorf("40 crafted keys use %d slots with hashing, want nearly 40", len(hashedSlots))
	}
}

// Hashed keys keep every limit, on both backends.
func TestHashedKeysLimit(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		clk := clock.NewFake(epoch)
		c := b.Client(t)
		lim, err := redislimit.New(c, redislimit.SlidingLog(3, time.Minute),
			redislimit.WithHashedKeys([]byte("s")), redislimit.WithClock(clk.Now), redislimit.WithPrefix(testPrefix(t)))
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"a", "b", "{a}"} {
			for i := 0; i < 4; i++ {
				r, err := lim.Allow(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				if want := i < 3; r.Allowed != want {
					t.Errorf("key %q call %d: Allowed = %v, want %v", k, i, r.Allowed, want)
				}
			}
			assertTTL(t, c, redislimit.RedisKey(lim, k), time.Minute)
		}
		if n := keysUnder(t, c); n != 3 {
			t.Errorf("%d keys for 3 user keys", n)
		}
		if err := lim.Reset(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if r, _ := lim.Allow(ctx, "a"); !r.Allowed {
			t.Error("Reset did not clear a hashed key")
		}
	})
}
