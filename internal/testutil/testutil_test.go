package testutil

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestMain(m *testing.M) { VerifyMain(m) }

func TestEventuallyWaitsForTheCondition(t *testing.T) {
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 3 {
			n.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	Eventually(t, "three increments", func() bool { return n.Load() == 3 })
	<-done
}

func TestClockMovesOnlyWhenTold(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewClock(t0)
	if !c.Now().Equal(t0) {
		t.Fatalf("Now = %v, want %v", c.Now(), t0)
	}
	c.Advance(90 * time.Second)
	if got := c.Now().Sub(t0); got != 90*time.Second {
		t.Fatalf("advanced by %v, want 90s", got)
	}
}
