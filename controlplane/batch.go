package controlplane

import "time"

const (
	// maxBatch bounds a batch: the events or audit entries one write
	// stores, the timed-out sandboxes one claim takes.
	maxBatch = 256
	// batchLinger is how long after one batch began to be written the
	// next may begin. Under load, what queues for the store waits up to
	// that long to share a write, whose statements are as many for a
	// batch as for one; the first after a quiet spell is written at
	// once. Readers (SSE streams, webhooks) see it up to that much
	// later. The audit log does not linger (audit.go).
	batchLinger = 50 * time.Millisecond
)

// gather returns a batch of first and what comes on q within linger
// (nothing waited for when it is not positive) and is queued then, at
// most maxBatch. A closed q ends it.
func gather[T any](q <-chan T, first T, linger time.Duration) []T {
	batch := []T{first}
	if linger > 0 {
		t := time.NewTimer(linger)
		defer t.Stop()
	wait:
		for len(batch) < maxBatch {
			select {
			case v, ok := <-q:
				if !ok {
					return batch
				}
				batch = append(batch, v)
			case <-t.C:
				break wait
			}
		}
	}
	for len(batch) < maxBatch {
		select {
		case v, ok := <-q:
			if !ok {
				return batch
			}
			batch = append(batch, v)
		default:
			return batch
		}
	}
	return batch
}
