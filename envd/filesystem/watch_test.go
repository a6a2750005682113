package filesystem

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	rpc "roost.dev/roost/gen/filesystem"
	"roost.dev/roost/gen/filesystem/filesystemconnect"
)

// patience bounds every wait for something that must happen; it is a
// deadlock guard, not a performance assertion.
const patience = 20 * time.Second

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// stream records one WatchDir stream.
type stream struct {
	msgs chan *rpc.WatchDirResponse
	err  chan error // the stream's final error, once msgs is closed
	seen []string   // filesystem events consumed so far, "TYPE name"
}

// watchDir opens a WatchDir stream, checks that it starts with start{}, and
// reads it in the background until the test ends.
func watchDir(t *testing.T, c filesystemconnect.FilesystemClient, msg *rpc.WatchDirRequest, header map[string]string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req := connect.NewRequest(msg)
	for k, v := range header {
		req.Header().Set(k, v)
	}
	cs, err := c.WatchDir(ctx, req)
	if err != nil {
		cancel()
		t.Fatalf("watch dir: %v", err)
	}
	if !cs.Receive() {
		cancel()
		t.Fatalf("watch dir: no start event: %v", cs.Err())
	}
	if cs.Msg().GetStart() == nil {
		cancel()
		t.Fatalf("first event %v, want start", cs.Msg())
	}
	s := &stream{msgs: make(chan *rpc.WatchDirResponse, 1024), err: make(chan error, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(s.msgs)
		for cs.Receive() {
			s.msgs <- cs.Msg()
		}
		s.err <- cs.Err()
		_ = cs.Close()
	}()
	t.Cleanup(func() {
		cancel()
		for range s.msgs { // unblock the reader if the buffer is full
		}
		<-done
	})
	return s
}

// expect waits for a filesystem event of type typ named name, skipping others
// (inotify may add WRITEs and CHMODs around the one asked for).
func (s *stream) expect(t *testing.T, typ rpc.EventType, name string) *rpc.FilesystemEvent {
	t.Helper()
	timeout := time.After(patience)
	for {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				t.Fatalf("stream ended (%v) waiting for %v %q; saw %v", <-s.err, typ, name, s.seen)
			}
			fe := m.GetFilesystem()
			if fe == nil {
				continue
			}
			s.seen = append(s.seen, fe.GetType().String()+" "+fe.GetName())
			if fe.GetType() == typ && fe.GetName() == name {
				return fe
			}
		case <-timeout:
			t.Fatalf("no %v %q; saw %v", typ, name, s.seen)
		}
	}
}

// end waits for the stream to end and returns its error.
func (s *stream) end(t *testing.T) error {
	t.Helper()
	timeout := time.After(patience)
	for {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				return <-s.err
			}
			if fe := m.GetFilesystem(); fe != nil {
				s.seen = append(s.seen, fe.GetType().String()+" "+fe.GetName())
			}
		case <-timeout:
			t.Fatal("stream did not end")
		}
	}
}

const (
	evCreate = rpc.EventType_EVENT_TYPE_CREATE
	evWrite  = rpc.EventType_EVENT_TYPE_WRITE
	evRemove = rpc.EventType_EVENT_TYPE_REMOVE
	evRename = rpc.EventType_EVENT_TYPE_RENAME
	evChmod  = rpc.EventType_EVENT_TYPE_CHMOD
)

func TestWatchDir(t *testing.T) {
	e := newEnv(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
		s := watchDir(t, c, &rpc.WatchDirRequest{Path: dir}, nil)

		f := filepath.Join(dir, "a.txt")
		writeFile(t, f, "", 0o644)
		s.expect(t, evCreate, "a.txt")
		must(t, os.WriteFile(f, []byte("more"), 0o644))
		s.expect(t, evWrite, "a.txt")
		must(t, os.Chmod(f, 0o600))
		s.expect(t, evChmod, "a.txt")
		must(t, os.Rename(f, filepath.Join(dir, "b.txt")))
		s.expect(t, evRename, "a.txt")
		s.expect(t, evCreate, "b.txt")
		must(t, os.Remove(filepath.Join(dir, "b.txt")))
		s.expect(t, evRemove, "b.txt")

		// Not recursive: a change inside sub is not reported. inotify keeps
		// order, so once the marker arrives the inner event would have too.
		writeFile(t, filepath.Join(dir, "sub", "inner"), "", 0o644)
		writeFile(t, filepath.Join(dir, "marker"), "", 0o644)
		s.expect(t, evCreate, "marker")
		for _, ev := range s.seen {
			if strings.Contains(ev, "inner") {
				t.Errorf("non-recursive watch reported %q", ev)
			}
		}
	})
}

func TestWatchDirRecursive(t *testing.T) {
	e := newEnv(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		must(t, os.MkdirAll(filepath.Join(dir, "old", "deep"), 0o755))
		s := watchDir(t, c, &rpc.WatchDirRequest{Path: dir, Recursive: true}, nil)

		// Directories that existed at the start are watched.
		writeFile(t, filepath.Join(dir, "old", "deep", "x"), "", 0o644)
		s.expect(t, evCreate, "old/deep/x")

		// A new directory and a file made in it at once: the file is
		// reported whether it beat the new watch or not.
		must(t, os.MkdirAll(filepath.Join(dir, "new", "nested"), 0o755))
		writeFile(t, filepath.Join(dir, "new", "nested", "f"), "", 0o644)
		s.expect(t, evCreate, "new")
		s.expect(t, evCreate, "new/nested/f")

		// And the new directory is watched from then on.
		must(t, os.WriteFile(filepath.Join(dir, "new", "nested", "f"), []byte("x"), 0o644))
		s.expect(t, evWrite, "new/nested/f")
		must(t, os.Rename(filepath.Join(dir, "new", "nested", "f"), filepath.Join(dir, "new", "nested", "g")))
		s.expect(t, evRename, "new/nested/f")
		s.expect(t, evCreate, "new/nested/g")
		must(t, os.Remove(filepath.Join(dir, "new", "nested", "g")))
		s.expect(t, evRemove, "new/nested/g")

		// A renamed directory reports under its new name afterwards.
		must(t, os.Rename(filepath.Join(dir, "new"), filepath.Join(dir, "renamed")))
		s.expect(t, evRename, "new")
		s.expect(t, evCreate, "renamed")
		writeFile(t, filepath.Join(dir, "renamed", "nested", "h"), "", 0o644)
		s.expect(t, evCreate, "renamed/nested/h")

		// A directory moved in from outside is watched too.
		outside := filepath.Join(e.dir, "outside-"+filepath.Base(dir))
		must(t, os.MkdirAll(filepath.Join(outside, "in"), 0o755))
		must(t, os.Rename(outside, filepath.Join(dir, "moved-in")))
		s.expect(t, evCreate, "moved-in")
		writeFile(t, filepath.Join(dir, "moved-in", "in", "z"), "", 0o644)
		s.expect(t, evCreate, "moved-in/in/z")

		must(t, os.RemoveAll(filepath.Join(dir, "renamed")))
		s.expect(t, evRemove, "renamed/nested/h")
		s.expect(t, evRemove, "renamed")
	})
}

func TestWatchDirIncludeEntry(t *testing.T) {
	e := newEnv(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		s := watchDir(t, c, &rpc.WatchDirRequest{Path: dir, IncludeEntry: true}, nil)
		must(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
		ev := s.expect(t, evCreate, "d")
		if en := ev.GetEntry(); en.GetPath() != filepath.Join(dir, "d") || en.GetType() != rpc.FileType_FILE_TYPE_DIRECTORY || en.GetName() != "d" {
			t.Errorf("entry %v", en)
		}
		must(t, os.Remove(filepath.Join(dir, "d")))
		if ev := s.expect(t, evRemove, "d"); ev.Entry != nil {
			t.Errorf("entry %v for a removed path", ev.GetEntry())
		}
	})
}

func TestWatchDirKeepalive(t *testing.T) {
	e := newEnv(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		s := watchDir(t, c, &rpc.WatchDirRequest{Path: dir}, map[string]string{keepaliveHeader: "1"})
		timeout := time.After(patience)
		for n := 0; n < 2; {
			select {
			case m, ok := <-s.msgs:
				if !ok {
					t.Fatalf("stream ended: %v", <-s.err)
				}
				if m.GetKeepalive() != nil {
					n++
				} else {
					t.Fatalf("unexpected %v on an idle directory", m)
				}
			case <-timeout:
				t.Fatal("no keepalives")
			}
		}
	})
}

// TestWatchDirEnds covers the ways a stream ends other than the client
// leaving: its directory is removed, or the service closes.
func TestWatchDirEnds(t *testing.T) {
	e := newEnv(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		gone := filepath.Join(dir, "gone")
		must(t, os.Mkdir(gone, 0o755))
		s := watchDir(t, c, &rpc.WatchDirRequest{Path: gone}, nil)
		must(t, os.Remove(gone))
		wantCode(t, s.end(t), connect.CodeNotFound)
	})

	s := watchDir(t, e.clients[0], &rpc.WatchDirRequest{Path: e.dir, Recursive: true}, nil)
	must(t, e.svc.Close())
	wantCode(t, s.end(t), connect.CodeUnavailable)
	for _, c := range e.clients {
		_, err := c.CreateWatcher(context.Background(), connect.NewRequest(&rpc.CreateWatcherRequest{Path: e.dir}))
		wantCode(t, err, connect.CodeUnavailable)
		cs, err := c.WatchDir(context.Background(), connect.NewRequest(&rpc.WatchDirRequest{Path: e.dir}))
		must(t, err)
		for cs.Receive() {
			t.Errorf("%s: event %v from a closed service", c.name, cs.Msg())
		}
		wantCode(t, cs.Err(), connect.CodeUnavailable)
		_ = cs.Close()
	}
}

// TestWatchDirClientLeaves: a client that goes away releases its watch.
func TestWatchDirClientLeaves(t *testing.T) {
	e := newEnv(t)
	for _, c := range e.clients {
		ctx, cancel := context.WithCancel(context.Background())
		cs, err := c.WatchDir(ctx, connect.NewRequest(&rpc.WatchDirRequest{Path: e.dir, Recursive: true}))
		must(t, err)
		if !cs.Receive() {
			t.Fatal(cs.Err())
		}
		if n := streams(e.svc); n != 1 {
			t.Errorf("%s: %d streams tracked, want 1", c.name, n)
		}
		cancel()
		_ = cs.Close()
		deadline := time.Now().Add(patience)
		for streams(e.svc) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: watch outlived its client", c.name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func streams(s *Service) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// poll calls GetWatcherEvents until want events have arrived (in any order,
// others ignored) and returns everything it saw.
func poll(t *testing.T, c filesystemconnect.FilesystemClient, id string, want ...string) []string {
	t.Helper()
	var seen []string
	missing := map[string]bool{}
	for _, w := range want {
		missing[w] = true
	}
	deadline := time.Now().Add(patience)
	for len(missing) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("missing %v; saw %v", missing, seen)
		}
		res, err := c.GetWatcherEvents(context.Background(), connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: id}))
		if err != nil {
			t.Fatalf("get watcher events: %v", err)
		}
		for _, ev := range res.Msg.GetEvents() {
			s := ev.GetType().String() + " " + ev.GetName()
			seen = append(seen, s)
			delete(missing, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return seen
}

func TestPollingWatcher(t *testing.T) {
	e := newEnv(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		ctx := context.Background()
		res, err := c.CreateWatcher(ctx, connect.NewRequest(&rpc.CreateWatcherRequest{Path: dir, Recursive: true, IncludeEntry: true}))
		must(t, err)
		id := res.Msg.GetWatcherId()
		if len(id) < 20 {
			t.Errorf("watcher id %q is guessable", id)
		}

		must(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
		writeFile(t, filepath.Join(dir, "d", "f"), "x", 0o644)
		poll(t, c, id, "EVENT_TYPE_CREATE d", "EVENT_TYPE_CREATE d/f")

		// Events are returned once: what follows is only new.
		must(t, os.Remove(filepath.Join(dir, "d", "f")))
		seen := poll(t, c, id, "EVENT_TYPE_REMOVE d/f")
		for _, s := range seen {
			if strings.HasPrefix(s, "EVENT_TYPE_CREATE") {
				t.Errorf("event %q returned twice", s)
			}
		}

		// A second watcher has its own id and events.
		res2, err := c.CreateWatcher(ctx, connect.NewRequest(&rpc.CreateWatcherRequest{Path: dir}))
		must(t, err)
		if res2.Msg.GetWatcherId() == id {
			t.Fatal("two watchers share an id")
		}
		writeFile(t, filepath.Join(dir, "top"), "", 0o644)
		poll(t, c, res2.Msg.GetWatcherId(), "EVENT_TYPE_CREATE top")
		poll(t, c, id, "EVENT_TYPE_CREATE top")

		for _, w := range []string{id, res2.Msg.GetWatcherId()} {
			_, err = c.RemoveWatcher(ctx, connect.NewRequest(&rpc.RemoveWatcherRequest{WatcherId: w}))
			must(t, err)
			_, err = c.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: w}))
			wantCode(t, err, connect.CodeNotFound)
			_, err = c.RemoveWatcher(ctx, connect.NewRequest(&rpc.RemoveWatcherRequest{WatcherId: w}))
			wantCode(t, err, connect.CodeNotFound)
		}
	})
}

// TestPollingWatcherCatchesUp: one GetWatcherEvents right after a change
// returns its event. The SDKs' sync watch handles poll once after a write
// and expect it there; the kernel has queued the event by then, but envd's
// own goroutines may not have read it yet.
func TestPollingWatcherCatchesUp(t *testing.T) {
	e := newEnv(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		ctx := context.Background()
		res, err := c.CreateWatcher(ctx, connect.NewRequest(&rpc.CreateWatcherRequest{Path: dir}))
		must(t, err)
		id := res.Msg.GetWatcherId()
		for i := range 200 {
			name := fmt.Sprintf("f%d", i)
			writeFile(t, filepath.Join(dir, name), "x", 0o644)
			ev, err := c.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: id}))
			must(t, err)
			var got []string
			for _, e := range ev.Msg.GetEvents() {
				got = append(got, e.GetType().String()+" "+e.GetName())
			}
			if !slices.Contains(got, "EVENT_TYPE_CREATE "+name) {
				t.Fatalf("write %d: events %v lack the CREATE of %s", i, got, name)
			}
		}
	})
}

// TestPollingWatcherOverflow: a watcher nobody polls in time reports
// resource_exhausted once, then is gone.
func TestPollingWatcherOverflow(t *testing.T) {
	e := newEnv(t)
	e.svc.pollBuffer = 4
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		ctx := context.Background()
		res, err := c.CreateWatcher(ctx, connect.NewRequest(&rpc.CreateWatcherRequest{Path: dir}))
		must(t, err)
		id := res.Msg.GetWatcherId()
		e.svc.mu.Lock()
		w := e.svc.pollers[id]
		e.svc.mu.Unlock()

		for i := range 20 {
			writeFile(t, filepath.Join(dir, fmt.Sprintf("f%d", i)), "", 0o644)
		}
		select {
		case <-w.done:
		case <-time.After(patience):
			t.Fatal("watcher did not overflow")
		}
		_, err = c.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: id}))
		wantCode(t, err, connect.CodeResourceExhausted)
		_, err = c.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: id}))
		wantCode(t, err, connect.CodeNotFound)
	})
}

// TestCloseStopsWatchers: Close ends every polling watcher's goroutine.
func TestCloseStopsWatchers(t *testing.T) {
	e := newEnv(t)
	var ws []*watch
	for _, c := range e.clients {
		res, err := c.CreateWatcher(context.Background(), connect.NewRequest(&rpc.CreateWatcherRequest{Path: e.dir, Recursive: true}))
		must(t, err)
		e.svc.mu.Lock()
		ws = append(ws, e.svc.pollers[res.Msg.GetWatcherId()])
		e.svc.mu.Unlock()
	}
	must(t, e.svc.Close())
	for _, w := range ws {
		select {
		case <-w.done:
		default:
			t.Error("watcher still running after Close")
		}
	}
	_, err := e.clients[0].GetWatcherEvents(context.Background(), connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: "w"}))
	wantCode(t, err, connect.CodeNotFound)
}

// TestWatchDirIgnoresTempFiles: an upload that replaces a file via a
// temporary file shows up only under the destination's name, as the WRITE
// E2B's envd reports for a file it rewrites in place (the SDK waits for it).
func TestWatchDirIgnoresTempFiles(t *testing.T) {
	e := newEnv(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
		s := watchDir(t, c, &rpc.WatchDirRequest{Path: dir, Recursive: true}, nil)
		for _, dst := range []string{"dst", "sub/dst"} {
			writeFile(t, filepath.Join(dir, dst), "old", 0o644)
			s.expect(t, evCreate, dst)
			tmp := filepath.Join(dir, filepath.Dir(dst), TempFilePrefix+"abc")
			writeFile(t, tmp, "data", 0o644)
			must(t, os.Chmod(tmp, 0o600))
			must(t, os.Rename(tmp, filepath.Join(dir, dst)))
			s.seen = nil
			s.expect(t, evWrite, dst)
		}
		writeFile(t, filepath.Join(dir, "marker"), "", 0o644)
		s.expect(t, evCreate, "marker")
		for _, ev := range s.seen {
			if strings.Contains(ev, TempFilePrefix) || ev == "EVENT_TYPE_CREATE sub/dst" {
				t.Errorf("event %q of the temporary file", ev)
			}
		}
	})
}

// TestWatchDirTempFileRemoved: a temporary file removed instead of renamed
// (a failed upload) leaves nothing behind: the next file created is a
// CREATE.
func TestWatchDirTempFileRemoved(t *testing.T) {
	e := newEnv(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		s := watchDir(t, c, &rpc.WatchDirRequest{Path: dir}, nil)
		tmp := filepath.Join(dir, TempFilePrefix+"abc")
		writeFile(t, tmp, "data", 0o644)
		must(t, os.Remove(tmp))
		writeFile(t, filepath.Join(dir, "new"), "", 0o644)
		s.expect(t, evCreate, "new")
	})
}
