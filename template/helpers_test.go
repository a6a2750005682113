package template

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ent is one tar entry for mkTar: hdr as written, body for regular files.
type ent struct {
	hdr  tar.Header
	body string
}

var epoch = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func dir(name string, mode int64) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: epoch}}
}

func file(name string, mode int64, body string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: epoch}, body: body}
}

func symlink(name, target string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: epoch}}
}

func hardlink(name, target string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, ModTime: epoch}}
}

func owned(e ent, uid, gid int) ent {
	e.hdr.Uid, e.hdr.Gid = uid, gid
	return e
}

// mkTar writes entries as a tar stream, gzipped if gz.
func mkTar(t testing.TB, gz bool, entries ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	var zw *gzip.Writer
	w := &buf
	tw := tar.NewWriter(w)
	if gz {
		zw = gzip.NewWriter(w)
		tw = tar.NewWriter(zw)
	}
	for _, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %q: %v", h.Name, err)
		}
		if e.body != "" {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatalf("tar body %q: %v", h.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// newTestStore returns a store in a fresh temp dir.
func newTestStore(t testing.TB) *Store {
	t.Helper()
	s := NewStore(filepath.Join(t.TempDir(), "templates"), testLogger(t))
	// Before TempDir's own cleanup, which cannot empty read-only dirs
	// when not running as root.
	t.Cleanup(func() {
		if err := removeTree(s.Dir()); err != nil {
			t.Errorf("remove store: %v", err)
		}
	})
	return s
}

// storeEntries lists what is in the store dir, lock files left out.
func storeEntries(t testing.TB, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(s.Dir())
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if len(e.Name()) > len(lockPref) && e.Name()[:len(lockPref)] == lockPref {
			continue
		}
		names = append(names, e.Name())
	}
	return names
}

// snapshotDir records the names and contents of the files below dir.
func snapshotDir(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		switch {
		case info.Mode().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			out[rel] = string(b)
		default:
			out[rel] = info.Mode().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
