package console

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// ring writes a log as two files, path and path.1, each at most max
// bytes: when path is full it becomes path.1 (replacing the older one)
// and path starts afresh. Readers read path.1, then path. It is not safe
// for concurrent use; its drain is its only writer.
type ring struct {
	path string
	max  int64
	f    *os.File
	size int64
	// last is the last byte written, to start notes on a line of their own.
	last byte
}

// openRing opens the ring at path, appending to what an earlier drain
// (before a restore or an agent restart) left there.
func openRing(path string, max int64) (*ring, error) {
	r := &ring{path: path, max: max, last: '\n'}
	if err := r.open(os.O_APPEND); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *ring) open(flag int) error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE|flag, 0o600)
	if err != nil {
		return fmt.Errorf("open console log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open console log: %w", err)
	}
	r.f, r.size = f, st.Size()
	return nil
}

// rotate makes the current file the older one and starts a new one.
func (r *ring) rotate() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("rotate console log: %w", err)
	}
	if err := os.Rename(r.path, r.path+".1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rotate console log: %w", err)
	}
	return r.open(os.O_TRUNC | os.O_APPEND)
}

// Write appends p, rotating first when p does not fit. Of a p larger than
// a whole file, only its end is kept: the newest output matters most.
func (r *ring) Write(p []byte) (int, error) {
	n := len(p)
	if n == 0 {
		return 0, nil
	}
	if r.size+int64(n) > r.max && r.size > 0 {
		if err := r.rotate(); err != nil {
			return 0, err
		}
	}
	if int64(len(p)) > r.max {
		p = p[int64(len(p))-r.max:]
	}
	w, err := r.f.Write(p)
	r.size += int64(w)
	if w > 0 {
		r.last = p[w-1]
	}
	if err != nil {
		return 0, fmt.Errorf("write console log: %w", err)
	}
	return n, nil
}

// note writes one line of roost's own, on a line of its own.
func (r *ring) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if r.last != '\n' {
		msg = "\n" + msg
	}
	_, _ = r.Write([]byte(msg + "\n"))
}

func (r *ring) Close() error { return r.f.Close() }

// bucket is a token bucket of bytes: rate a second, up to burst at once.
type bucket struct {
	rate, burst float64
	tokens      float64
	at          time.Time
}

func newBucket(rate, burst int64) *bucket {
	return &bucket{rate: float64(rate), burst: float64(burst), tokens: float64(burst), at: time.Now()}
}

// take says whether n bytes may pass now, and takes them if so.
func (b *bucket) take(n int) bool {
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
	b.at = now
	if float64(n) > b.tokens {
		return false
	}
	b.tokens -= float64(n)
	return true
}
