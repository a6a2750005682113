package buildcontext

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

// makeTree writes files (name → content; a name ending in "/" is a
// directory) below a new directory.
func makeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if name[len(name)-1] == '/' {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// entries lists a packed tar's names, with a symlink's target after "->".
func entries(t *testing.T, p *Packed) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(p.File)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(modTime) {
			t.Errorf("%s: owner %d:%d mtime %v, want 0:0 and the fixed time", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		n := h.Name
		if h.Typeflag == tar.TypeSymlink {
			n += "->" + h.Linkname
		}
		names = append(names, n)
	}
	if _, err := p.File.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	return names
}

func pack(t *testing.T, dir string) *Packed {
	t.Helper()
	exclude, err := Ignored(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Pack(t.Context(), dir, exclude, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestPackIgnore(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ignore string
		want   []string
	}{
		{"nothing ignored", "", []string{".dockerignore", "app/", "app/main.py", "app/tmp/", "app/tmp/x.log", "node_modules/", "node_modules/m.js", "readme.md"}},
		{"a directory", "node_modules", []string{".dockerignore", "app/", "app/main.py", "app/tmp/", "app/tmp/x.log", "readme.md"}},
		{"a glob at any depth", "**/*.log\n*.md", []string{".dockerignore", "app/", "app/main.py", "app/tmp/", "node_modules/", "node_modules/m.js"}},
		{"an exception", "*\n!app/main.py", []string{"app/", "app/main.py"}},
		{"comments and blank lines", "# keep it\n\nnode_modules/\n", []string{".dockerignore", "app/", "app/main.py", "app/tmp/", "app/tmp/x.log", "readme.md"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"app/main.py": "print(1)", "app/tmp/x.log": "log", "node_modules/m.js": "js", "readme.md": "hi"}
			if tc.ignore != "" {
				files[IgnoreFile] = tc.ignore
			} else {
				files[IgnoreFile] = ""
			}
			// "*" excludes the directory app/, but the exception
			// below it needs its parent: it is sent too.
			got := entries(t, pack(t, makeTree(t, files)))
			if !slices.Equal(got, tc.want) {
				t.Errorf("entries = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPackDigest(t *testing.T) {
	dir := makeTree(t, map[string]string{"a": "one", "sub/b": "two"})
	if err := os.Symlink("../a", filepath.Join(dir, "sub/link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	first := pack(t, dir)
	if got, want := entries(t, first), []string{"a", "sub/", "sub/b", "sub/link->../a"}; !slices.Equal(got, want) {
		t.Errorf("entries = %q, want %q (the fifo left out, the link kept)", got, want)
	}
	if st, err := first.File.Stat(); err != nil || st.Size() != first.Size || len(first.SHA256) != 64 {
		t.Errorf("packed = size %d sha %q, file %v %v", first.Size, first.SHA256, st, err)
	}
	// Touched, not changed: the same digest.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "a"), later, later); err != nil {
		t.Fatal(err)
	}
	if again := pack(t, dir); again.SHA256 != first.SHA256 {
		t.Errorf("digest after a touch = %s, want %s", again.SHA256, first.SHA256)
	}
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("uno"), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed := pack(t, dir); changed.SHA256 == first.SHA256 {
		t.Error("digest unchanged after a file's content changed")
	}
}

func TestPackBadInput(t *testing.T) {
	dir := makeTree(t, map[string]string{"a": "x"})
	if _, err := Pack(t.Context(), filepath.Join(dir, "a"), nil, t.TempDir()); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Pack of a file = %v, want ErrInvalid", err)
	}
	if _, err := Pack(t.Context(), dir, []string{"!"}, t.TempDir()); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Pack with a bad pattern = %v, want ErrInvalid", err)
	}
	if _, err := Pack(t.Context(), filepath.Join(dir, "missing"), nil, t.TempDir()); err == nil {
		t.Error("Pack of a missing dir succeeded")
	}
}
