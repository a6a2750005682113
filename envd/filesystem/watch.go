package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	rpc "roost.dev/roost/gen/filesystem"
)

// watchOptions are the fields WatchDirRequest and CreateWatcherRequest share.
type watchOptions struct {
	recursive    bool
	includeEntry bool
	buffer       int // capacity of the events channel, in events
	// catchUp gives the watch a marker for catchUp (polling watchers).
	catchUp bool
}

// catchUpTimeout bounds catchUp's wait for its marker. The loop handles
// events without blocking, so only a long walk of a new directory tree
// can delay it; its events are then left to the next poll.
const catchUpTimeout = 2 * time.Second

// watch turns fsnotify events under one directory into FilesystemEvents on a
// bounded channel. One goroutine (loop) owns the fsnotify watcher and the
// set of watched directories; it never blocks on the consumer: when the
// channel is full it ends the watch with errOverflow instead of dropping an
// event. stop ends it; so does an fsnotify error or the loss of root.
type watch struct {
	root string
	opts watchOptions
	log  *slog.Logger
	fsw  *fsnotify.Watcher

	// dirs are the directories with an fsnotify watch. Only loop touches it
	// once loop has started.
	dirs map[string]struct{}

	// landing is the directory where an upload's temporary file (see
	// TempFilePrefix) was renamed away by the previous event, or "". Only
	// loop touches it.
	landing string

	// marker, when non-nil, is an unlinked file that the same inotify
	// instance watches, reported as markerPath. The kernel queues an
	// instance's events in order, so when loop sees the WRITE of the
	// marker, it has handled every event queued before that write.
	marker     *os.File
	markerPath string
	catchUpMu  sync.Mutex    // serialises catchUp: one marker write in flight
	caughtUp   chan struct{} // loop signals each marker event (capacity 1)

	// events carries translated events; loop closes it when it ends, after
	// setting err.
	events chan *rpc.FilesystemEvent
	err    error // why the watch ended; nil after stop; read after events closes

	quit     chan struct{} // closed by stop
	quitOnce sync.Once
	done     chan struct{} // closed when loop has returned
}

// startWatch begins watching root, an existing directory. Once it returns,
// every later change under root is reported.
func startWatch(root string, opts watchOptions, log *slog.Logger) (*watch, error) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("start watch: %w", err)
	}
	w := &watch{
		root:   root,
		opts:   opts,
		log:    log.With("root", root),
		fsw:    fsw,
		dirs:   map[string]struct{}{},
		events: make(chan *rpc.FilesystemEvent, max(opts.buffer, 1)),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	if err := w.watchAll(); err != nil {
		_ = fsw.Close()
		if w.marker != nil {
			_ = w.marker.Close()
		}
		return nil, fmt.Errorf("start watch: %w", err)
	}
	go w.loop()
	return w, nil
}

// watchAll adds the watches startWatch needs: root, the tree below it when
// recursive, and the catch-up marker when asked for.
func (w *watch) watchAll() error {
	if err := w.add(w.root); err != nil {
		return err
	}
	if w.opts.recursive {
		if err := w.addTree(w.root, nil); err != nil {
			return err
		}
	}
	if w.opts.catchUp {
		if err := w.addMarker(); err != nil {
			// Polls still work, only without the guarantee.
			w.log.Debug("watch: no catch-up marker", "err", err)
		}
	}
	return nil
}

// addMarker makes the catch-up marker: a file in the temporary directory,
// named like an upload's temporary file so that no watch reports it,
// watched and then unlinked, so that only its open file keeps it.
func (w *watch) addMarker() error {
	f, err := os.CreateTemp("", TempFilePrefix+"watch-")
	if err != nil {
		return fmt.Errorf("create marker: %w", err)
	}
	err = w.fsw.Add(f.Name())
	if rmErr := os.Remove(f.Name()); err == nil {
		err = rmErr
	}
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("watch marker: %w", err)
	}
	w.marker, w.markerPath, w.caughtUp = f, f.Name(), make(chan struct{}, 1)
	return nil
}

// catchUp returns once loop has handled every event the kernel queued
// before the call, so that a drain after it sees them: without it a poll
// right after a change (the SDKs' sync watch handles do that) can come
// before envd's goroutines have read the change's event. It returns early
// when the watch ends, ctx ends, or after catchUpTimeout; without a marker
// it returns at once.
func (w *watch) catchUp(ctx context.Context) {
	if w.marker == nil {
		return
	}
	w.catchUpMu.Lock()
	defer w.catchUpMu.Unlock()
	select {
	case <-w.caughtUp: // the marker of a catchUp that gave up
	default:
	}
	if _, err := w.marker.WriteAt([]byte{0}, 0); err != nil {
		w.log.Debug("watch: write marker", "err", err)
		return
	}
	timer := time.NewTimer(catchUpTimeout)
	defer timer.Stop()
	select {
	case <-w.caughtUp:
	case <-w.done:
	case <-ctx.Done():
	case <-timer.C:
		w.log.Debug("watch: marker not back in time")
	}
}

// stop ends the watch and waits for its goroutine. Safe to call repeatedly
// and after the watch ended on its own.
func (w *watch) stop() {
	w.quitOnce.Do(func() { close(w.quit) })
	<-w.done
}

// add starts watching one directory.
func (w *watch) add(dir string) error {
	if err := w.fsw.Add(dir); err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	w.dirs[dir] = struct{}{}
	return nil
}

// addTree watches every directory below dir (not dir itself) without
// following symlinks. When created is non-nil, each entry found is passed
// to it: the contents of a directory that just appeared were never
// announced by inotify if they were made before its watch existed.
// Directories that vanish or cannot be read mid-walk are skipped.
func (w *watch) addTree(dir string, created func(path string) bool) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			w.log.Debug("watch: skipping unreadable directory", "path", p, "err", err)
			return nil
		}
		if p == dir {
			return nil
		}
		if d.IsDir() {
			if err := w.add(p); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return fs.SkipDir
				}
				return err
			}
		}
		if created != nil && !created(p) {
			return fs.SkipAll
		}
		return nil
	})
}

// forget drops the watches on dir and everything below it, after dir was
// renamed or removed. Without this a moved directory's watches would keep
// reporting under the old name.
func (w *watch) forget(dir string) {
	prefix := dir + string(filepath.Separator)
	for d := range w.dirs {
		if d == dir || strings.HasPrefix(d, prefix) {
			_ = w.fsw.Remove(d) // already gone when the kernel dropped it
			delete(w.dirs, d)
		}
	}
}

// loop is the watch's only goroutine.
func (w *watch) loop() {
	defer close(w.done)
	defer close(w.events)
	defer func() {
		if r := recover(); r != nil {
			w.log.Error("watch: panic", "panic", r, "stack", string(debug.Stack()))
			w.err = fmt.Errorf("watch %s: panic: %v", w.root, r)
		}
		if err := w.fsw.Close(); err != nil {
			w.log.Debug("watch: close fsnotify", "err", err)
		}
		if w.marker != nil {
			_ = w.marker.Close()
		}
	}()
	for {
		select {
		case <-w.quit:
			return
		case err, ok := <-w.fsw.Errors:
			if !ok {
				w.err = fmt.Errorf("watch %s: fsnotify closed", w.root)
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				err = fmt.Errorf("kernel event queue overflowed: %w", errOverflow)
			}
			w.err = fmt.Errorf("watch %s: %w", w.root, err)
			return
		case ev, ok := <-w.fsw.Events:
			if !ok {
				w.err = fmt.Errorf("watch %s: fsnotify closed", w.root)
				return
			}
			if w.marker != nil && ev.Name == w.markerPath {
				w.markerEvent(ev)
				continue
			}
			if err := w.handle(ev); err != nil {
				w.err = err
				return
			}
		}
	}
}

// markerEvent signals catchUp on a WRITE of the marker; its other events
// (its unlinking) mean nothing.
func (w *watch) markerEvent(ev fsnotify.Event) {
	if !ev.Has(fsnotify.Write) {
		return
	}
	select {
	case w.caughtUp <- struct{}{}:
	default:
	}
}

// ops maps fsnotify's op bits to wire events, in E2B's order; one fsnotify
// event can carry several.
var ops = []struct {
	op fsnotify.Op
	ev rpc.EventType
}{
	{fsnotify.Create, rpc.EventType_EVENT_TYPE_CREATE},
	{fsnotify.Rename, rpc.EventType_EVENT_TYPE_RENAME},
	{fsnotify.Chmod, rpc.EventType_EVENT_TYPE_CHMOD},
	{fsnotify.Write, rpc.EventType_EVENT_TYPE_WRITE},
	{fsnotify.Remove, rpc.EventType_EVENT_TYPE_REMOVE},
}

// handle delivers one fsnotify event and keeps the watched set current. It
// returns an error when the watch must end.
func (w *watch) handle(ev fsnotify.Event) error {
	path := filepath.Clean(ev.Name)
	if replaced, err := w.upload(path, ev); replaced || err != nil {
		return err
	}
	for _, o := range ops {
		if ev.Has(o.op) && !w.deliver(path, o.ev) {
			return fmt.Errorf("watch %s: %w", w.root, errOverflow)
		}
	}
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		if path == w.root {
			return fmt.Errorf("watch %s: %w", w.root, errWatchedGone)
		}
		if w.opts.recursive {
			w.forget(path)
		}
	}
	if ev.Has(fsnotify.Create) && w.opts.recursive {
		if _, ok := w.dirs[path]; ok {
			// Found by the walk of a new parent, which reported its
			// contents; inotify reports what came after.
			return nil
		}
		fi, err := os.Lstat(path)
		if err != nil || !fi.IsDir() {
			return nil // gone again, or not a directory
		}
		if err := w.add(path); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("watch %s: %w", w.root, err)
		}
		overflow := false
		err = w.addTree(path, func(p string) bool {
			if !w.deliver(p, rpc.EventType_EVENT_TYPE_CREATE) {
				overflow = true
			}
			return !overflow
		})
		if overflow {
			return fmt.Errorf("watch %s: %w", w.root, errOverflow)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("watch %s: %w", w.root, err)
		}
	}
	return nil
}

// upload hides an upload's temporary file and reports its rename over the
// destination as a WRITE of the destination, which is what it is for the
// client: uploads replace only existing files this way, and E2B's envd,
// which rewrites such files in place, reports WRITE for them. inotify
// queues a rename's MOVED_FROM and MOVED_TO (fsnotify's Rename and Create)
// back to back, so the Create that directly follows the temporary file's
// Rename in its directory is its arrival (envd never moves a temporary file
// anywhere but over its destination). (A write to another file racing
// with the rename can come between them; the destination is then reported
// as a CREATE.) upload returns true when it has dealt with ev.
func (w *watch) upload(path string, ev fsnotify.Event) (bool, error) {
	if strings.HasPrefix(filepath.Base(path), TempFilePrefix) {
		if ev.Has(fsnotify.Rename) {
			w.landing = filepath.Dir(path)
		}
		return true, nil
	}
	landing := w.landing
	if landing == "" {
		return false, nil
	}
	w.landing = ""
	if ev.Op != fsnotify.Create || filepath.Dir(path) != landing {
		return false, nil
	}
	if !w.deliver(path, rpc.EventType_EVENT_TYPE_WRITE) {
		return true, fmt.Errorf("watch %s: %w", w.root, errOverflow)
	}
	return true, nil
}

// deliver queues one event without blocking; false means the buffer is full.
// Events for an upload's temporary file are dropped (see TempFilePrefix).
func (w *watch) deliver(path string, typ rpc.EventType) bool {
	if strings.HasPrefix(filepath.Base(path), TempFilePrefix) {
		return true
	}
	name, err := filepath.Rel(w.root, path)
	if err != nil {
		name = path // cannot happen: fsnotify reports paths under root
	}
	e := &rpc.FilesystemEvent{Name: name, Type: typ}
	if w.opts.includeEntry {
		if entry, err := newNames().entry(path); err == nil {
			e.Entry = entry
		}
	}
	select {
	case w.events <- e:
		return true
	default:
		return false
	}
}

// drain returns the events queued now, without waiting, and whether the
// watch has ended (then err says why).
func (w *watch) drain() (events []*rpc.FilesystemEvent, ended bool) {
	for {
		select {
		case e, ok := <-w.events:
			if !ok {
				return events, true
			}
			events = append(events, e)
		default:
			return events, false
		}
	}
}
