package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/envd/identity"
)

func TestCodeOf(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("outer: %w", &fs.PathError{Op: "op", Path: "/p", Err: err}) }
	for _, tc := range []struct {
		err  error
		code connect.Code
	}{
		{wrap(syscall.ENOENT), connect.CodeNotFound},
		{wrap(syscall.ENOTDIR), connect.CodeInvalidArgument},
		{wrap(syscall.EISDIR), connect.CodeInvalidArgument},
		{wrap(syscall.EEXIST), connect.CodeAlreadyExists},
		{wrap(syscall.ENOTEMPTY), connect.CodeAlreadyExists},
		{wrap(syscall.EACCES), connect.CodePermissionDenied},
		{wrap(syscall.EPERM), connect.CodePermissionDenied},
		{wrap(syscall.ENOSPC), connect.CodeResourceExhausted},
		{wrap(syscall.ELOOP), connect.CodeFailedPrecondition},
		{wrap(syscall.EXDEV), connect.CodeFailedPrecondition},
		{wrap(syscall.EIO), connect.CodeInternal},
		{fmt.Errorf("x: %w", identity.ErrBadPath), connect.CodeInvalidArgument},
		{fmt.Errorf("x: %w", errNotDir), connect.CodeInvalidArgument},
		{fmt.Errorf("x: %w", errDirExists), connect.CodeAlreadyExists},
		{fmt.Errorf("x: %w", errUnknownWatcher), connect.CodeNotFound},
		{fmt.Errorf("x: %w", errOverflow), connect.CodeResourceExhausted},
		{fmt.Errorf("x: %w", errWatchedGone), connect.CodeNotFound},
		{fmt.Errorf("x: %w", errClosed), connect.CodeUnavailable},
		{context.Canceled, connect.CodeCanceled},
		{context.DeadlineExceeded, connect.CodeDeadlineExceeded},
		{errors.New("other"), connect.CodeInternal},
	} {
		if got := connect.CodeOf(connectError(tc.err)); got != tc.code {
			t.Errorf("%v: %v, want %v", tc.err, got, tc.code)
		}
	}
	// An error that already has a code keeps it.
	pre := connect.NewError(connect.CodeUnauthenticated, errors.New("no"))
	if got := connectError(fmt.Errorf("wrapped: %w", pre)); connect.CodeOf(got) != connect.CodeUnauthenticated {
		t.Errorf("pre-coded error became %v", got)
	}
	if connectError(nil) != nil {
		t.Error("nil error mapped to non-nil")
	}
}

func TestKeepaliveInterval(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"", defaultKeepalive},
		{"1", time.Second},
		{"50", 50 * time.Second},
		{"0", defaultKeepalive},
		{"-3", defaultKeepalive},
		{"1.5", defaultKeepalive},
		{"abc", defaultKeepalive},
		{"99999999999999999999", defaultKeepalive},
		{"9223372036854775807", defaultKeepalive}, // would overflow a Duration
	} {
		h := http.Header{}
		if tc.header != "" {
			h.Set(keepaliveHeader, tc.header)
		}
		if got := keepaliveInterval(h); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.header, got, tc.want)
		}
	}
}

func TestResolvePath(t *testing.T) {
	u := identity.User{Name: "u", Home: "/home/u"}
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "/etc/../etc/./passwd", want: "/etc/passwd"},
		{in: "rel/x", want: "/home/u/rel/x"},
		{in: "~", want: "/home/u"},
		{in: "~/a/", want: "/home/u/a"},
		{in: "../..", want: "/"},
		{in: "", bad: true},
		{in: "a\x00", bad: true},
	} {
		got, err := resolvePath(u, tc.in)
		if tc.bad {
			if connect.CodeOf(connectError(err)) != connect.CodeInvalidArgument {
				t.Errorf("%q: got %q, %v; want invalid_argument", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	// A passwd entry with a relative home must not yield a relative path.
	if got, err := resolvePath(identity.User{Home: "relative"}, "x"); err != nil || got != "/x" {
		t.Errorf("relative home: %q, %v", got, err)
	}
}

// FuzzResolvePath feeds arbitrary homes and client paths through the path
// handling every RPC starts with: it must not panic, must reject exactly the
// unusable inputs as invalid_argument, and must otherwise produce a clean
// absolute path. Entry building then runs on the result, which must not
// panic either, whatever (mostly missing) file it names.
func FuzzResolvePath(f *testing.F) {
	for _, seed := range [][2]string{
		{"/home/user", "file.txt"},
		{"/home/user", "~"},
		{"/home/user", "~/"},
		{"/home/user", "~other/x"},
		{"/home/user", "../../../../etc/passwd"},
		{"/", "/a//b/./c/.."},
		{"/home/user", ""},
		{"/home/user", "a\x00b"},
		{"relative", "x"},
		{"", "x"},
		{"/home/user", "/proc/self/root/.."},
		{"/home/user", strings.Repeat("a/", 300)},
	} {
		f.Add(seed[0], seed[1])
	}
	n := newNames()
	f.Fuzz(func(t *testing.T, home, p string) {
		got, err := resolvePath(identity.User{Name: "fuzz", Home: home}, p)
		if err != nil {
			if connect.CodeOf(connectError(err)) != connect.CodeInvalidArgument {
				t.Fatalf("(%q, %q): %v is not invalid_argument", home, p, err)
			}
			if p != "" && !strings.ContainsRune(p, 0) && filepath.IsAbs(home) && !strings.ContainsRune(home, 0) {
				t.Fatalf("(%q, %q) rejected: %v", home, p, err)
			}
			return
		}
		if !filepath.IsAbs(got) || filepath.Clean(got) != got || strings.ContainsRune(got, 0) {
			t.Fatalf("(%q, %q) = %q: not clean and absolute", home, p, got)
		}
		if filepath.IsAbs(p) && got != filepath.Clean(p) {
			t.Fatalf("(%q, %q) = %q: absolute path changed", home, p, got)
		}
		// Never under a real path that exists on purpose: the fuzzer's paths
		// are read-only probes (Lstat, Readlink, xattrs).
		if e, err := n.entry(got); err == nil && e.GetPath() != got {
			t.Fatalf("entry for %q has path %q", got, e.GetPath())
		}
	})
}

// TestWatchOverflow drives a watch whose consumer never reads: the watch must
// end with errOverflow, keeping the events it had queued, rather than block
// fsnotify or drop events silently.
func TestWatchOverflow(t *testing.T) {
	dir := t.TempDir()
	w, err := startWatch(dir, watchOptions{buffer: 3}, discardLog())
	must(t, err)
	defer w.stop()
	for i := range 20 {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("f%d", i)), "", 0o644)
	}
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		t.Fatal("watch did not end on overflow")
	}
	if !errors.Is(w.err, errOverflow) {
		t.Fatalf("ended with %v, want overflow", w.err)
	}
	events, ended := w.drain()
	if !ended || len(events) != 3 {
		t.Fatalf("drained %d events, ended %v; want the 3 queued and ended", len(events), ended)
	}
	if events[0].GetName() != "f0" {
		t.Errorf("first event %v, want f0", events[0])
	}
}

// TestWatchStopIdempotent: stop may be called by several owners.
func TestWatchStopIdempotent(t *testing.T) {
	w, err := startWatch(t.TempDir(), watchOptions{buffer: 1, recursive: true}, discardLog())
	must(t, err)
	w.stop()
	w.stop()
	if _, ended := w.drain(); !ended {
		t.Error("events still open after stop")
	}
	if w.err != nil {
		t.Errorf("stopped watch has error %v", w.err)
	}
}

func TestCloseTwice(t *testing.T) {
	s := New(nil, nil)
	must(t, s.Close())
	must(t, s.Close())
}

// TestListDirUnreadableSubdir: a directory below the listed one that cannot
// be read is listed without its contents instead of failing the listing.
func TestListDirUnreadableSubdir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads every directory")
	}
	dir := t.TempDir()
	locked := filepath.Join(dir, "locked")
	must(t, os.MkdirAll(filepath.Join(locked, "hidden"), 0o755))
	must(t, os.Chmod(locked, 0o000))
	t.Cleanup(func() { _ = os.Chmod(locked, 0o755) })
	writeFile(t, filepath.Join(dir, "visible"), "", 0o644)
	got, err := listDir(discardLog(), dir, 5)
	must(t, err)
	var names []string
	for _, e := range got {
		names = append(names, e.GetName())
	}
	if strings.Join(names, " ") != "locked visible" {
		t.Errorf("listed %v", names)
	}
	if _, err := listDir(discardLog(), locked, 1); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("listing the locked dir itself: %v", err)
	}
}
