package template

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
)

func TestValidName(t *testing.T) {
	cases := []struct {
		name string
		ok   bool
	}{
		{"base", true},
		{"a", true},
		{"0", true},
		{"python-3.12_slim", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{".hidden", false},
		{"-dash", false},
		{"_under", false},
		{"Upper", false},
		{"a/b", false},
		{"..", false},
		{"a b", false},
		{"ünï", false},
		{"a\n", false},
	}
	for _, c := range cases {
		err := ValidName(c.name)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, errdefs.ErrInvalid)) {
			t.Errorf("ValidName(%q) = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func TestGetListRemove(t *testing.T) {
	s := newTestStore(t)
	if got, err := s.List(); err != nil || len(got) != 0 {
		t.Fatalf("List of a store never written = %v, %v; want empty", got, err)
	}
	if _, err := s.Get("nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get(missing) = %v, want ErrNotFound", err)
	}
	if _, err := s.Get("Bad/Name"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Get(bad name) = %v, want ErrInvalid", err)
	}
	// A tree with read-only directories, which Remove must still delete.
	tarball := mkTar(t, false, dir("ro/", 0o555), dir("ro/deeper/", 0o500), file("ro/deeper/f", 0o400, "x"), file("f", 0o444, "x"))
	for _, name := range []string{"zeta", "alpha", "mid.1"} {
		if _, err := s.Import(t.Context(), name, bytes.NewReader(tarball)); err != nil {
			t.Fatalf("Import %s: %v", name, err)
		}
	}
	// Strays a List must skip.
	for _, p := range []string{".build-x/rootfs", "no-record/rootfs", "UPPER"} {
		if err := os.MkdirAll(filepath.Join(s.Dir(), p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), "a-file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tm := range list {
		names = append(names, tm.Name)
		if tm.RootFS != filepath.Join(s.Dir(), tm.Name, "rootfs") {
			t.Errorf("%s: RootFS = %s", tm.Name, tm.RootFS)
		}
	}
	if want := []string{"alpha", "mid.1", "zeta"}; !slices.Equal(names, want) {
		t.Errorf("List = %v, want %v", names, want)
	}

	if err := s.Remove("mid.1"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := s.Get("mid.1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get after Remove = %v, want ErrNotFound", err)
	}
	if _, err := os.Lstat(filepath.Join(s.Dir(), "mid.1")); !os.IsNotExist(err) {
		t.Errorf("tree still there after Remove: %v", err)
	}
	if err := s.Remove("mid.1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second Remove = %v, want ErrNotFound", err)
	}
	if err := s.Remove("no-record"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Remove of a stray = %v, want ErrNotFound", err)
	}
	if err := s.Remove("../x"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Remove(bad name) = %v, want ErrInvalid", err)
	}
	for _, e := range storeEntries(t, s) {
		if strings.HasPrefix(e, trashPref) {
			t.Errorf("trash left behind: %s", e)
		}
	}
	// A name whose dir is a stray can still be imported.
	if _, err := s.Import(t.Context(), "no-record", bytes.NewReader(tarball)); err != nil {
		t.Errorf("Import over a stray dir: %v", err)
	}
}

func TestRemoveRefusesMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	s := newTestStore(t)
	tm, err := s.Import(t.Context(), "mounted", bytes.NewReader(mkTar(t, false, dir("mnt/", 0o755))))
	if err != nil {
		t.Fatal(err)
	}
	// A bind mount of a directory with content of its own, standing in
	// for anything mounted in a tree.
	victim := t.TempDir()
	if err := os.WriteFile(filepath.Join(victim, "precious"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(tm.RootFS, "mnt")
	if err := mount(victim, mnt); err != nil {
		t.Skipf("bind mount: %v", err)
	}
	defer unmount(mnt)
	if err := s.Remove("mounted"); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Remove with a mount inside = %v, want ErrConflict", err)
	}
	if _, err := os.Stat(filepath.Join(victim, "precious")); err != nil {
		t.Errorf("the mounted dir lost its content: %v", err)
	}
	unmount(mnt)
	if err := s.Remove("mounted"); err != nil {
		t.Errorf("Remove after unmount: %v", err)
	}
}

// stubBase replaces debootstrap in s with a build that writes a tiny tree
// and waits for release (closed, or sent to) before returning.
type stubBase struct {
	calls   atomic.Int32
	started chan struct{} // one send per build started
	release chan error    // what the build returns
}

func newStubBase(s *Store) *stubBase {
	b := &stubBase{started: make(chan struct{}, 10), release: make(chan error, 10)}
	s.buildBase = func(ctx context.Context, build string, p *progress) (Template, error) {
		b.calls.Add(1)
		if entries, _ := os.ReadDir(build); len(entries) != 0 {
			return Template{}, fmt.Errorf("build dir not fresh: %v", entries)
		}
		if err := os.WriteFile(filepath.Join(build, logFile), []byte("stub log\n"), 0o644); err != nil {
			return Template{}, err
		}
		p.enter(stageRelease)
		b.started <- struct{}{}
		var err error
		select {
		case err = <-b.release:
		case <-ctx.Done():
			return Template{}, ctx.Err()
		}
		if err != nil {
			return Template{}, err
		}
		p.enter(stageRetrieve)
		rootfs := filepath.Join(build, rootfsDir)
		if err := os.MkdirAll(filepath.Join(rootfs, "home/user"), 0o755); err != nil {
			return Template{}, err
		}
		return Template{Source: SourceDebootstrap, DefaultUser: baseUser, Workdir: baseHome}, nil
	}
	return b
}

// lineWatcher is a progress writer that reports when a line containing
// want arrives.
type lineWatcher struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func newLineWatcher(want string) *lineWatcher {
	return &lineWatcher{want: want, seen: make(chan struct{})}
}

func (w *lineWatcher) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(b)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(b), nil
}

func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestEnsureBaseSharesOneBuild(t *testing.T) {
	s := newTestStore(t)
	stub := newStubBase(s)
	// A half-built leftover with a read-only dir, as a crash leaves it.
	leftover := filepath.Join(s.Dir(), buildPref+BaseName, "rootfs", "ro")
	if err := os.MkdirAll(leftover, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(leftover, "junk"), []byte("x"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(leftover, 0o555); err != nil {
		t.Fatal(err)
	}

	const callers = 3
	type result struct {
		tm  Template
		err error
	}
	results := make(chan result, callers)
	writers := make([]*lineWatcher, callers)
	for i := range callers {
		writers[i] = newLineWatcher("waiting for the build in progress")
		go func() {
			tm, err := s.EnsureBase(t.Context(), writers[i])
			results <- result{tm, err}
		}()
		if i == 0 {
			<-stub.started
			continue
		}
		<-writers[i].seen
	}
	stub.release <- nil
	var created []Template
	for range callers {
		r := <-results
		if r.err != nil {
			t.Fatalf("EnsureBase: %v", r.err)
		}
		created = append(created, r.tm)
	}
	if n := stub.calls.Load(); n != 1 {
		t.Errorf("builds = %d, want 1 shared by %d callers", n, callers)
	}
	for _, tm := range created {
		if tm.Name != BaseName || !tm.Created.Equal(created[0].Created) || tm.DefaultUser != baseUser {
			t.Errorf("callers got different templates: %+v vs %+v", tm, created[0])
		}
	}
	for i, w := range writers {
		if !strings.Contains(w.String(), "[base 3/7] retrieving packages") {
			t.Errorf("caller %d progress = %q, want the build's stages", i, w.String())
		}
	}
	if _, err := os.Lstat(filepath.Join(s.Dir(), BaseName, logFile)); err != nil {
		t.Errorf("build log not kept beside the tree: %v", err)
	}
	if left := storeEntries(t, s); !slices.Equal(left, []string{BaseName}) {
		t.Errorf("store holds %v, want only base (leftover build removed)", left)
	}

	// Cached now: no build, no progress.
	var quiet bytes.Buffer
	tm, err := s.EnsureBase(t.Context(), &quiet)
	if err != nil || !tm.Created.Equal(created[0].Created) || quiet.Len() != 0 || stub.calls.Load() != 1 {
		t.Errorf("EnsureBase when cached = %+v, %v, progress %q, builds %d", tm, err, quiet.String(), stub.calls.Load())
	}
}

func TestEnsureBaseWaiterTakesOver(t *testing.T) {
	s := newTestStore(t)
	stub := newStubBase(s)
	leaderCtx, cancelLeader := context.WithCancel(t.Context())
	leaderDone := make(chan error, 1)
	go func() {
		_, err := s.EnsureBase(leaderCtx, nil)
		leaderDone <- err
	}()
	<-stub.started
	waiter := newLineWatcher("waiting for the build in progress")
	waiterDone := make(chan error, 1)
	go func() {
		_, err := s.EnsureBase(t.Context(), waiter)
		waiterDone <- err
	}()
	<-waiter.seen
	cancelLeader()
	if err := <-leaderDone; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled leader got %v, want context.Canceled", err)
	}
	<-stub.started // the waiter's own build
	stub.release <- nil
	if err := <-waiterDone; err != nil {
		t.Errorf("waiter: %v", err)
	}
	if n := stub.calls.Load(); n != 2 {
		t.Errorf("builds = %d, want 2 (the waiter took over)", n)
	}
}

func TestEnsureBaseFailure(t *testing.T) {
	s := newTestStore(t)
	stub := newStubBase(s)
	stub.release <- errors.New("mirror on fire")
	_, err := s.EnsureBase(t.Context(), nil)
	if err == nil || !strings.Contains(err.Error(), "mirror on fire") {
		t.Fatalf("EnsureBase = %v, want the build's error", err)
	}
	if _, err := s.Get(BaseName); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get after a failed build = %v, want ErrNotFound", err)
	}
	// The log stays for inspection; the tree does not.
	build := filepath.Join(s.Dir(), buildPref+BaseName)
	if entries, _ := os.ReadDir(build); len(entries) != 1 || entries[0].Name() != logFile {
		t.Errorf("build dir after failure holds %v, want only %s", entries, logFile)
	}
	<-stub.started // the failed build's
	stub.release <- nil
	if _, err := s.EnsureBase(t.Context(), nil); err != nil {
		t.Fatalf("EnsureBase after a failure: %v", err)
	}
}

func TestEnsureBaseWaitsForAnotherProcess(t *testing.T) {
	s := newTestStore(t)
	stub := newStubBase(s)
	// Another process holds the lock: a second Store on the same dir, as
	// another process would have, taking the lock by hand.
	unlock, err := NewStore(s.Dir(), nil).lock(t.Context(), BaseName, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := newLineWatcher("waiting for another process")
	done := make(chan error, 1)
	go func() {
		_, err := s.EnsureBase(t.Context(), w)
		done <- err
	}()
	<-w.seen
	if n := stub.calls.Load(); n != 0 {
		t.Fatalf("built while another process held the lock")
	}
	unlock()
	<-stub.started
	stub.release <- nil
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestTailFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := tailFile(p, 3), "line 97\nline 98\nline 99"; got != want {
		t.Errorf("tailFile = %q, want %q", got, want)
	}
	if got := tailFile(filepath.Join(t.TempDir(), "missing"), 3); got != "" {
		t.Errorf("tailFile(missing) = %q", got)
	}
}

func mount(src, dst string) error { return unix.Mount(src, dst, "", unix.MS_BIND, "") }

func unmount(dst string) { _ = unix.Unmount(dst, unix.MNT_DETACH) }
