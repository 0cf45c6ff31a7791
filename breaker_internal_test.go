package redislimit

import (
	"testing"
	"time"
)

func TestBreaker(t *testing.T) {
	b := breaker{threshold: 3, cooldown: time.Hour}
	early := time.Now().UnixNano()
	time.Sleep(2 * time.Millisecond)
	b.success() // Redis answered a call after the early ones started

	for i := 0; i < 10; i++ {
		b.failure(false, early)
	}
	if ok, _ := b.allow(); !ok {
		t.Fatal("breaker opened on slow calls while Redis answered others")
	}

	b.success()
	time.Sleep(2 * time.Millisecond)
	late := time.Now().UnixNano() // after the last success
	for i := 0; i < 2; i++ {
		b.failure(false, late)
	}
	if ok, _ := b.allow(); !ok {
		t.Fatal("breaker opened below its threshold")
	}
	b.failure(false, late)
	if ok, _ := b.allow(); ok {
		t.Fatal("breaker stayed closed after 3 failures in a row with no success since")
	}

	b.openUntil.Store(time.Now().UnixNano()) // cool-down over
	ok, probe := b.allow()
	if !ok || !probe {
		t.Fatalf("after the cool-down allow() = %v, %v; want one probe", ok, probe)
	}
	if ok, _ := b.allow(); ok {
		t.Fatal("a second call went through while the probe was in flight")
	}
	b.success()
	if ok, probe := b.allow(); !ok || probe {
		t.Fatalf("after a successful probe allow() = %v, %v; want closed", ok, probe)
	}
}
