package console

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"roost.dev/roost/runtime"
)

// Limits of what a sandbox's console adds to its log.
const (
	// Rate is how many bytes a second a console may add to its log,
	// sustained; Burst how many at once (a VM's boot log fits in it).
	// What comes faster is read and dropped.
	Rate  = 64 << 10
	Burst = 1 << 20
	// readSize is one read from the pipe: small, as every running
	// sandbox's drain holds one buffer.
	readSize = 16 << 10
)

// drains are the running drains by log path: one per sandbox, so that a
// second adoption of the same console (Recover twice, an agent restarted
// in the same process in tests) does not split its pipe between two.
var drains = struct {
	sync.Mutex
	m map[string]*drain // guarded by the mutex
}{m: map[string]*drain{}}

// drain copies one console pipe into its ring until every write end is
// closed or Stop closes its read end.
type drain struct {
	r    *os.File
	done chan struct{}
}

// Pipe starts draining a new pipe into the console log at path (a
// sandbox's runtime.LogFile) and returns the pipe's write end, for the
// sandbox's process as its stdout, stderr or another file. The caller
// closes its copy once the process has started: the drain ends when the
// process, and any process it handed the pipe to, is gone. A drain still
// running for path (a hibernated sandbox's old process) is stopped first.
func Pipe(log *slog.Logger, path string) (*os.File, error) {
	Stop(path)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("console pipe: %w", err)
	}
	if err := start(log, path, r); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	return w, nil
}

// start registers and starts a drain of r into the ring at path; it takes
// r. A drain already running for path keeps running, and r is closed.
func start(log *slog.Logger, path string, r *os.File) error {
	drains.Lock()
	defer drains.Unlock()
	if _, ok := drains.m[path]; ok {
		r.Close()
		return nil
	}
	ring, err := openRing(path, runtime.LogMaxBytes/2)
	if err != nil {
		r.Close()
		return err
	}
	d := &drain{r: r, done: make(chan struct{})}
	drains.m[path] = d
	go d.run(log, path, ring)
	return nil
}

// Running says whether a drain runs for the log at path.
func Running(path string) bool {
	drains.Lock()
	defer drains.Unlock()
	_, ok := drains.m[path]
	return ok
}

// Stop ends the drain of the log at path, if one runs, and waits for it:
// what is still in the pipe is lost, and the sandbox's writes fail from
// then on.
func Stop(path string) {
	drains.Lock()
	d := drains.m[path]
	drains.Unlock()
	if d == nil {
		return
	}
	d.r.Close()
	<-d.done
}

func (d *drain) run(log *slog.Logger, path string, ring *ring) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("console drain panicked", "log", path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
		ring.Close()
		d.r.Close()
		drains.Lock()
		delete(drains.m, path)
		drains.Unlock()
		close(d.done)
	}()
	b := newBucket(Rate, Burst)
	buf := make([]byte, readSize)
	var dropped int64
	broken := false // the log cannot be written (its directory is gone): drain only
	for {
		n, err := d.r.Read(buf)
		if n > 0 && !broken {
			if b.take(n) {
				if dropped > 0 {
					ring.note("roost: %d bytes of console output dropped (over %d bytes/s)", dropped, Rate)
					dropped = 0
				}
				if _, werr := ring.Write(buf[:n]); werr != nil {
					log.Warn("console log not written; dropping the rest", "log", path, "err", werr)
					broken = true
				}
			} else {
				dropped += int64(n)
			}
		}
		if err != nil {
			if dropped > 0 && !broken {
				ring.note("roost: %d bytes of console output dropped (over %d bytes/s)", dropped, Rate)
			}
			return
		}
	}
}

// Wait waits up to d for the drain of the log at path, if one runs, to
// end by itself (every write end closed), so that what the sandbox's
// process wrote before it died is in the log: for the error message of a
// sandbox that failed to start. It reports whether the drain ended.
func Wait(path string, d time.Duration) bool {
	drains.Lock()
	dr := drains.m[path]
	drains.Unlock()
	if dr == nil {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-dr.done:
		return true
	case <-t.C:
		return false
	}
}
