package controlplane

import (
	"testing"
	"time"
)

// TestGather: a batch takes what is queued, up to maxBatch, and what
// comes while it lingers; a closed queue ends it.
func TestGather(t *testing.T) {
	q := make(chan int, 2*maxBatch)
	for i := range maxBatch + 10 {
		q <- i + 1
	}
	if got := gather(q, 0, 0); len(got) != maxBatch || got[0] != 0 || got[1] != 1 {
		t.Fatalf("a full queue: %d, first %v", len(got), got[:2])
	}
	if got := gather(q, -1, 0); len(got) != 12 {
		t.Fatalf("the rest: %d, want 12", len(got))
	}
	if got := gather(q, -1, 0); len(got) != 1 {
		t.Fatalf("an empty queue: %d, want 1", len(got))
	}
	go func() {
		q <- 7
		close(q)
	}()
	// It waits for what is sent after it began, and ends at the close
	// (long before the hour).
	if got := gather(q, -1, time.Hour); len(got) != 2 || got[1] != 7 {
		t.Fatalf("lingering: %v", got)
	}
}
