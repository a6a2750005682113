package lograte

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Handler passes at most Rate records a second, Burst at once, to the
// handler it wraps. It is safe for concurrent use, as slog requires.
type Handler struct {
	next   slog.Handler
	bucket *bucket // shared by every Handler derived by WithAttrs/WithGroup
}

// New wraps next: at most rate records a second pass, burst at once.
func New(next slog.Handler, rate float64, burst int) *Handler {
	return &Handler{next: next, bucket: &bucket{rate: rate, burst: float64(burst), tokens: float64(burst), at: time.Now()}}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle implements slog.Handler: it drops r when over the rate.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	pass, dropped := h.bucket.take()
	if !pass {
		return nil
	}
	if dropped > 0 {
		note := slog.NewRecord(r.Time, slog.LevelWarn, "log lines dropped", 0)
		note.AddAttrs(slog.Int64("dropped", dropped), slog.Float64("max_per_second", h.bucket.rate))
		if err := h.next.Handle(ctx, note); err != nil {
			return err
		}
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(attrs), bucket: h.bucket}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), bucket: h.bucket}
}

// bucket is a token bucket of records.
type bucket struct {
	mu          sync.Mutex
	rate, burst float64
	tokens      float64   // guarded by mu
	at          time.Time // guarded by mu: when tokens was computed
	dropped     int64     // guarded by mu: records dropped since the last that passed
}

// take says whether one record may pass now, and how many were dropped
// before it (which the caller reports).
func (b *bucket) take() (bool, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
	b.at = now
	if b.tokens < 1 {
		b.dropped++
		return false, 0
	}
	b.tokens--
	d := b.dropped
	b.dropped = 0
	return true, d
}
