package template

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template/content"
)

const testPasswd = "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\nsvc:x:1001:1001::/srv/svc:/bin/sh\n"

// putLayers stores tars as layer blobs and returns a manifest of them.
func putLayers(t *testing.T, blobs *content.Blobs, cfg content.Config, tars ...[]byte) (content.Manifest, content.Digest) {
	t.Helper()
	m := content.Manifest{Schema: content.ManifestSchema, Config: cfg, Layers: []content.Descriptor{}}
	for _, tr := range tars {
		desc, err := blobs.PutBytes(t.Context(), tr)
		if err != nil {
			t.Fatal(err)
		}
		m.Layers = append(m.Layers, desc)
	}
	d, err := blobs.PutManifest(t.Context(), m)
	if err != nil {
		t.Fatal(err)
	}
	return m, d
}

// countingHandler counts log records by message.
type countingHandler struct {
	mu   sync.Mutex
	msgs map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs[r.Message]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func (h *countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msgs[msg]
}

func TestMaterialize(t *testing.T) {
	logs := &countingHandler{msgs: map[string]int{}}
	s := NewStore(filepath.Join(t.TempDir(), "templates"), slog.New(logs))
	blobs := content.NewBlobs(filepath.Join(t.TempDir(), "blobs"))
	base := mkTar(t, false, dir("etc/", 0o755), file("etc/passwd", 0o644, testPasswd), dir("home/", 0o755),
		owned(dir("home/user/", 0o750), 1000, 1000), file("etc/gone", 0o644, "x"))
	top := mkTar(t, false, file("etc/.wh.gone", 0o644, ""), owned(file("home/user/app", 0o755, "#!/bin/sh\n"), 1000, 1000))
	cfg := content.Config{Env: map[string]string{"A": "1"}, StartCmd: "./app", ReadyCmd: "true", Source: "image example/app:1"}
	m, d := putLayers(t, blobs, cfg, base, top)

	var wg sync.WaitGroup
	got := make([]Template, 8)
	for i := range got {
		wg.Go(func() {
			tm, err := s.Materialize(t.Context(), m, d, blobs)
			if err != nil {
				t.Error(err)
			}
			got[i] = tm
		})
	}
	wg.Wait()
	if n := logs.count("template materialized"); n != 1 {
		t.Fatalf("made %d times, want once", n)
	}
	tm := got[0]
	for _, g := range got[1:] {
		if g.Name != tm.Name || !g.Created.Equal(tm.Created) {
			t.Fatalf("concurrent calls disagree: %+v and %+v", g, tm)
		}
	}
	if tm.Name != TreeName(d) || len(tm.Name) != 42 || tm.Manifest != d {
		t.Fatalf("name %q manifest %q", tm.Name, tm.Manifest)
	}
	if tm.DefaultUser != "user" || tm.Workdir != "/home/user" || tm.Env["A"] != "1" || tm.StartCmd != "./app" || tm.ReadyCmd != "true" || tm.Source != "image example/app:1" {
		t.Fatalf("template %+v", tm)
	}
	if exists(filepath.Join(tm.RootFS, "etc/gone")) || !exists(filepath.Join(tm.RootFS, "home/user/app")) {
		t.Fatal("layers not applied")
	}
	if g, err := s.Get(tm.Name); err != nil || g.Manifest != d || g.StartCmd != "./app" {
		t.Fatalf("Get = %+v, %v", g, err)
	}
	if left := storeEntries(t, s); len(left) != 1 || left[0] != tm.Name {
		t.Fatalf("store holds %v", left)
	}
	// Present: no work, no blobs needed.
	if err := os.RemoveAll(blobs.Dir()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Materialize(t.Context(), m, d, blobs); err != nil {
		t.Fatal(err)
	}
	if n := logs.count("template materialized"); n != 1 {
		t.Fatalf("made %d times, want once", n)
	}
}

func TestMaterializeUsers(t *testing.T) {
	s := newTestStore(t)
	blobs := content.NewBlobs(t.TempDir())
	layer := mkTar(t, false, dir("etc/", 0o755), file("etc/passwd", 0o644, testPasswd), dir("srv/", 0o755))
	for _, c := range []struct {
		user, workdir     string
		wantUser, wantDir string
	}{
		{"", "", "root", "/"}, // Import's choice: no /root in the tree
		{"svc", "", "svc", "/srv/svc"},
		{"1001:1001", "", "svc", "/srv/svc"},
		{"1001", "app/", "svc", "/app"},
		{"nobody-here", "", "nobody-here", "/"},
	} {
		m, d := putLayers(t, blobs, content.Config{User: c.user, Workdir: c.workdir}, layer)
		tm, err := s.Materialize(t.Context(), m, d, blobs)
		if err != nil {
			t.Fatal(err)
		}
		if tm.DefaultUser != c.wantUser || tm.Workdir != c.wantDir || tm.Source != SourceManifest {
			t.Errorf("user %q workdir %q: got %q %q (%s), want %q %q", c.user, c.workdir, tm.DefaultUser, tm.Workdir, tm.Source, c.wantUser, c.wantDir)
		}
	}
}

func TestMaterializeErrors(t *testing.T) {
	s := newTestStore(t)
	blobs := content.NewBlobs(t.TempDir())
	m, d := putLayers(t, blobs, content.Config{}, mkTar(t, false, file("x", 0o644, "x")))

	if _, err := s.Materialize(t.Context(), m, content.FromBytes([]byte("other")), blobs); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("wrong digest: %v", err)
	}
	missing := m
	missing.Layers = append(missing.Layers, content.Descriptor{Digest: content.FromBytes([]byte("absent")), Size: 6})
	_, md := missing.Encode()
	_, err := s.Materialize(t.Context(), missing, md, blobs)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), string(content.FromBytes([]byte("absent")))) {
		t.Errorf("missing layer: %v", err)
	}

	// A bad layer leaves nothing; so does one over the budget.
	bad, bd := putLayers(t, blobs, content.Config{}, mkTar(t, false, file("ok", 0o644, "x")), mkTar(t, false, file("../x", 0o644, "x")))
	if _, err := s.Materialize(t.Context(), bad, bd, blobs); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("bad layer: %v", err)
	}
	s.SizeBudget = 15 << 30
	big, gd := putLayers(t, blobs, content.Config{}, sparseClaim(t, "one", 8<<30), sparseClaim(t, "two", 8<<30))
	_, err = s.Materialize(t.Context(), big, gd, blobs)
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "layer 2") {
		t.Errorf("two layers over the budget together: %v", err)
	}
	if left := storeEntries(t, s); len(left) != 0 {
		t.Errorf("store holds %v after failures", left)
	}
	if _, err := s.Materialize(t.Context(), m, d, blobs); err != nil {
		t.Fatal(err)
	}
}

func TestAdopt(t *testing.T) {
	s := newTestStore(t)
	work := filepath.Join(filepath.Dir(s.Dir()), "work")
	mk := func() string {
		tree := filepath.Join(work, "tree")
		if err := os.MkdirAll(filepath.Join(tree, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tree, "etc/passwd"), []byte(testPasswd), 0o644); err != nil {
			t.Fatal(err)
		}
		return tree
	}
	tree := mk()
	m := content.Manifest{Schema: content.ManifestSchema, Layers: []content.Descriptor{}, Config: content.Config{User: "svc", StartCmd: "serve"}}
	_, d := m.Encode()
	tm, err := s.Adopt(t.Context(), tree, m, d)
	if err != nil {
		t.Fatal(err)
	}
	if exists(tree) || !exists(filepath.Join(tm.RootFS, "etc/passwd")) {
		t.Fatal("tree not moved into the store")
	}
	if tm.Name != TreeName(d) || tm.DefaultUser != "svc" || tm.StartCmd != "serve" || tm.Manifest != d {
		t.Fatalf("template %+v", tm)
	}
	// Present already: returned, the new tree left to the caller.
	tree = mk()
	again, err := s.Adopt(t.Context(), tree, m, d)
	if err != nil || !again.Created.Equal(tm.Created) || !exists(tree) {
		t.Fatalf("Adopt again = %+v, %v", again, err)
	}
	if _, err := s.Adopt(t.Context(), filepath.Join(work, "nothing"), m, d); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Adopt of nothing: %v", err)
	}
}

func TestLayerOfTreeRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to keep ownership")
	}
	s := newTestStore(t)
	blobs := content.NewBlobs(t.TempDir())
	src, err := s.Import(t.Context(), "hand", bytes.NewReader(mkTar(t, false,
		dir("./", 0o755), dir("etc/", 0o755), file("etc/passwd", 0o644, testPasswd),
		owned(dir("home/user/", 0o700), 1000, 1000), owned(file("home/user/f", 0o600, "secret"), 1000, 1001),
		owned(file("usr/bin/su", 0o4755, "elf"), 0, 0), hardlink("usr/bin/su2", "usr/bin/su"),
		symlink("bin", "usr/bin"), symlink("abs", "/etc/passwd"), dir("ro/", 0o555), file("ro/x", 0o444, "r"),
		file("empty", 0o644, ""),
	)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(src.RootFS, "fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setxattr(filepath.Join(src.RootFS, "etc/passwd"), "user.roost", []byte("v"), 0); err != nil {
		t.Logf("no user xattrs here: %v", err)
	}
	desc, err := s.LayerOfTree(t.Context(), "hand", blobs)
	if err != nil {
		t.Fatal(err)
	}
	// Remembered: a second call does not tar again.
	start := time.Now()
	if again, err := s.LayerOfTree(t.Context(), "hand", blobs); err != nil || again != desc {
		t.Fatalf("second LayerOfTree = %v, %v", again, err)
	}
	t.Logf("layer %s (%d bytes), remembered in %v", desc.Digest, desc.Size, time.Since(start))

	m := content.Manifest{Schema: content.ManifestSchema, Layers: []content.Descriptor{desc}}
	_, d := m.Encode()
	out, err := s.Materialize(t.Context(), m, d, blobs)
	if err != nil {
		t.Fatal(err)
	}
	a, b := treeStat(t, src.RootFS), treeStat(t, out.RootFS)
	for p, sa := range a {
		if sb, ok := b[p]; !ok || sa != sb {
			t.Errorf("%s: source %+v, round trip %+v", p, sa, sb)
		}
	}
	if len(a) != len(b) {
		t.Errorf("%d entries, round trip %d", len(a), len(b))
	}
	v := make([]byte, 8)
	if _, err := syscall.Getxattr(filepath.Join(src.RootFS, "etc/passwd"), "user.roost", v); err == nil {
		if n, err := syscall.Getxattr(filepath.Join(out.RootFS, "etc/passwd"), "user.roost", v); err != nil || string(v[:n]) != "v" {
			t.Errorf("xattr not kept: %v", err)
		}
	}
	var sa, sb syscall.Stat_t
	_ = syscall.Stat(filepath.Join(out.RootFS, "usr/bin/su"), &sa)
	_ = syscall.Stat(filepath.Join(out.RootFS, "usr/bin/su2"), &sb)
	if sa.Ino != sb.Ino {
		t.Error("hard link not kept")
	}
}

// entStat is what a round trip must keep of an entry.
type entStat struct {
	mode     fs.FileMode
	uid, gid uint32
	nlink    uint64
	mtime    int64
	body     string // file content or link target
}

func treeStat(t *testing.T, root string) map[string]entStat {
	t.Helper()
	out := map[string]entStat{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		e := entStat{mode: info.Mode(), uid: st.Uid, gid: st.Gid, nlink: st.Nlink, mtime: info.ModTime().Unix()}
		if info.IsDir() {
			e.nlink = 0 // counts subdirectories
		}
		if rel == "." {
			e.mtime = 0 // the store's rootfs dir
		}
		switch {
		case info.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			e.body = string(b)
		case info.Mode()&fs.ModeSymlink != 0:
			e.body, _ = os.Readlink(p)
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEvictTrees(t *testing.T) {
	s := newTestStore(t)
	blobs := content.NewBlobs(t.TempDir())
	layer := mkTar(t, false, file("data", 0o644, strings.Repeat("x", 40_000)))
	var names []string
	base := time.Now().Add(-time.Hour)
	for i := range 4 {
		m, d := putLayers(t, blobs, content.Config{Source: string(rune('a' + i))}, layer)
		tm, err := s.Materialize(t.Context(), m, d, blobs)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tm.Name)
		at := base.Add(time.Duration(i) * time.Minute)
		_ = os.Chtimes(filepath.Join(s.Dir(), tm.Name, metaFile), at, at)
	}
	if _, err := s.Import(t.Context(), "hand", bytes.NewReader(layer)); err != nil {
		t.Fatal(err)
	}
	s.Touch(names[0]) // now the most recent
	one, _ := s.Get(names[0])
	var asked atomic.Int32
	inUse := func(name string) bool { asked.Add(1); return name == names[1] }
	freed, err := s.Evict(2*one.SizeBytes, inUse)
	if err != nil {
		t.Fatal(err)
	}
	if freed != 2*one.SizeBytes {
		t.Errorf("freed %d, want %d", freed, 2*one.SizeBytes)
	}
	for i, want := range []bool{true, true, false, false} {
		if _, err := s.Get(names[i]); (err == nil) != want {
			t.Errorf("tree %d present %v, want %v", i, err == nil, want)
		}
	}
	if _, err := s.Get("hand"); err != nil {
		t.Error("a hand import was evicted")
	}
	if freed, err := s.Evict(0, func(string) bool { return true }); err != nil || freed != 0 {
		t.Errorf("Evict with all in use = %d, %v", freed, err)
	}
}
