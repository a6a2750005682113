package template

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
)

func TestImport(t *testing.T) {
	root := os.Geteuid() == 0
	passwd := "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n"
	cases := []struct {
		name    string
		gz      bool
		entries []ent
		check   func(t *testing.T, rootfs string, tm Template)
	}{{
		name: "files dirs and modes",
		entries: []ent{
			dir("etc/", 0o755),
			file("etc/os-release", 0o644, "ID=test\n"),
			dir("usr/", 0o755), dir("usr/bin/", 0o755),
			file("usr/bin/setuid", 0o4755, "#!/bin/sh\n"),
			file("usr/bin/setgid", 0o2711, "x"),
			dir("tmp/", 0o1777),
			dir("ro/", 0o555),
			file("ro/file", 0o444, "read only"),
			file("empty", 0o600, ""),
		},
		check: func(t *testing.T, rootfs string, tm Template) {
			wantMode(t, rootfs, "etc", fs.ModeDir|0o755)
			wantFile(t, rootfs, "etc/os-release", "ID=test\n")
			wantMode(t, rootfs, "etc/os-release", 0o644)
			wantMode(t, rootfs, "usr/bin/setuid", fs.ModeSetuid|0o755)
			wantMode(t, rootfs, "usr/bin/setgid", fs.ModeSetgid|0o711)
			wantMode(t, rootfs, "tmp", fs.ModeDir|fs.ModeSticky|0o777)
			wantMode(t, rootfs, "ro", fs.ModeDir|0o555)
			wantFile(t, rootfs, "ro/file", "read only")
			wantMode(t, rootfs, "ro/file", 0o444)
			wantFile(t, rootfs, "empty", "")
			fi, err := os.Lstat(filepath.Join(rootfs, "etc/os-release"))
			if err != nil || !fi.ModTime().Equal(epoch) {
				t.Errorf("etc/os-release mtime = %v, %v; want %v", fi.ModTime(), err, epoch)
			}
			if fi, _ := os.Lstat(filepath.Join(rootfs, "ro")); !fi.ModTime().Equal(epoch) {
				t.Errorf("ro mtime = %v, want %v (directory times are set after its contents)", fi.ModTime(), epoch)
			}
			if tm.DefaultUser != "root" || tm.Workdir != "/" || tm.Source != SourceImport {
				t.Errorf("defaults = %q %q %q, want root / import", tm.DefaultUser, tm.Workdir, tm.Source)
			}
		},
	}, {
		name: "ownership",
		entries: []ent{
			owned(dir("home/", 0o755), 0, 0),
			owned(dir("home/user/", 0o750), 1000, 1001),
			owned(file("home/user/.profile", 0o644, "x"), 1000, 1001),
			owned(symlink("home/user/link", "/etc"), 1000, 1001),
			owned(file("var-www", 0o640, "x"), 33, 33),
			owned(file("setuid-after-chown", 0o4755, "x"), 1000, 0),
		},
		check: func(t *testing.T, rootfs string, tm Template) {
			if !root {
				t.Skip("ownership is kept only when importing as root")
			}
			wantOwner(t, rootfs, "home", 0, 0)
			wantOwner(t, rootfs, "home/user", 1000, 1001)
			wantOwner(t, rootfs, "home/user/.profile", 1000, 1001)
			wantOwner(t, rootfs, "home/user/link", 1000, 1001)
			wantOwner(t, rootfs, "var-www", 33, 33)
			wantOwner(t, rootfs, "setuid-after-chown", 1000, 0)
			wantMode(t, rootfs, "setuid-after-chown", fs.ModeSetuid|0o755)
		},
	}, {
		name: "symlinks",
		entries: []ent{
			dir("usr/", 0o755), dir("usr/lib/", 0o755),
			symlink("lib", "usr/lib"),
			symlink("etc-passwd", "/etc/passwd"),
			symlink("dangling", "nowhere/at/all"),
			symlink("up", "../../../.."),
		},
		check: func(t *testing.T, rootfs string, tm Template) {
			wantLink(t, rootfs, "lib", "usr/lib")
			wantLink(t, rootfs, "etc-passwd", "/etc/passwd")
			wantLink(t, rootfs, "dangling", "nowhere/at/all")
			wantLink(t, rootfs, "up", "../../../..")
		},
	}, {
		name: "hard links",
		entries: []ent{
			dir("bin/", 0o755),
			file("bin/busybox", 0o755, "multi-call"),
			hardlink("bin/sh", "bin/busybox"),
			hardlink("./bin/ls", "./bin/busybox"),
			symlink("bin/link", "/somewhere"),
			hardlink("bin/link2", "bin/link"),
			hardlink("bin/self", "bin/self"),
		},
		check: func(t *testing.T, rootfs string, tm Template) {
			a, b, c := inode(t, rootfs, "bin/busybox"), inode(t, rootfs, "bin/sh"), inode(t, rootfs, "bin/ls")
			if a != b || a != c {
				t.Errorf("inodes of busybox, sh, ls = %d %d %d, want one", a, b, c)
			}
			wantLink(t, rootfs, "bin/link2", "/somewhere")
			if inode(t, rootfs, "bin/link") != inode(t, rootfs, "bin/link2") {
				t.Error("a hard link to a symlink links the symlink itself")
			}
		},
	}, {
		name: "gzip",
		gz:   true,
		entries: []ent{
			dir("etc/", 0o755),
			file("etc/motd", 0o644, strings.Repeat("compressed ", 10000)),
		},
		check: func(t *testing.T, rootfs string, tm Template) {
			wantFile(t, rootfs, "etc/motd", strings.Repeat("compressed ", 10000))
		},
	}, {
		name: "implicit parents and root entry",
		entries: []ent{
			dir("./", 0o751),
			file("a/b/c/file", 0o600, "deep"),
		},
		check: func(t *testing.T, rootfs string, tm Template) {
			wantMode(t, rootfs, ".", fs.ModeDir|0o751)
			wantMode(t, rootfs, "a/b", fs.ModeDir|0o755)
			wantFile(t, rootfs, "a/b/c/file", "deep")
		},
	}, {
		name: "devices skipped and fifos kept",
		entries: []ent{
			dir("dev/", 0o755),
			{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}},
			{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/sda", Mode: 0o660, Devmajor: 8}},
			{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "run-fifo", Mode: 0o620}},
		},
		check: func(t *testing.T, rootfs string, tm Template) {
			for _, p := range []string{"dev/null", "dev/sda"} {
				if _, err := os.Lstat(filepath.Join(rootfs, p)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s: %v, want skipped", p, err)
				}
			}
			wantMode(t, rootfs, "run-fifo", fs.ModeNamedPipe|0o620)
		},
	}, {
		name: "later entries replace earlier ones",
		entries: []ent{
			symlink("etc", "/etc"),
			dir("etc/", 0o755), // replaces the symlink instead of following it
			file("etc/hostname", 0o644, "inside"),
			file("was-file", 0o644, "x"),
			dir("was-file/", 0o700),
			dir("was-dir/", 0o755),
			file("was-dir", 0o644, "now a file"),
			symlink("link", "/etc"),
			file("link", 0o644, "replaces the link"),
			file("twice", 0o644, "first"),
			file("twice", 0o600, "second"),
		},
		check: func(t *testing.T, rootfs string, tm Template) {
			wantMode(t, rootfs, "etc", fs.ModeDir|0o755)
			wantFile(t, rootfs, "etc/hostname", "inside")
			wantMode(t, rootfs, "was-file", fs.ModeDir|0o700)
			wantFile(t, rootfs, "was-dir", "now a file")
			wantFile(t, rootfs, "link", "replaces the link")
			wantFile(t, rootfs, "twice", "second")
			wantMode(t, rootfs, "twice", 0o600)
		},
	}, {
		name: "xattrs",
		entries: []ent{
			{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "tagged", Mode: 0o644, Size: 1, ModTime: epoch,
				PAXRecords: map[string]string{"SCHILY.xattr.user.roost": "value"}}, body: "x"},
		},
		check: func(t *testing.T, rootfs string, tm Template) {
			buf := make([]byte, 64)
			n, err := unix.Lgetxattr(filepath.Join(rootfs, "tagged"), "user.roost", buf)
			if errors.Is(err, unix.ENOTSUP) {
				t.Skip("the store's filesystem has no user xattrs")
			}
			if err != nil || string(buf[:n]) != "value" {
				t.Errorf("xattr user.roost = %q, %v; want value", buf[:n], err)
			}
		},
	}, {
		name: "default user from passwd and home",
		entries: []ent{
			dir("etc/", 0o755),
			file("etc/passwd", 0o644, passwd),
			dir("home/", 0o755), dir("home/user/", 0o755), dir("root/", 0o700),
		},
		check: func(t *testing.T, rootfs string, tm Template) {
			if tm.DefaultUser != "user" || tm.Workdir != "/home/user" {
				t.Errorf("defaults = %q %q, want user /home/user", tm.DefaultUser, tm.Workdir)
			}
		},
	}, {
		name: "root default without a home for user",
		entries: []ent{
			dir("etc/", 0o755),
			file("etc/passwd", 0o644, passwd),
			dir("root/", 0o700),
		},
		check: func(t *testing.T, rootfs string, tm Template) {
			if tm.DefaultUser != "root" || tm.Workdir != "/root" {
				t.Errorf("defaults = %q %q, want root /root", tm.DefaultUser, tm.Workdir)
			}
		},
	}, {
		name: "passwd behind a symlink is not read",
		entries: []ent{
			dir("etc/", 0o755),
			symlink("etc/passwd", "/etc/passwd"),
			dir("home/", 0o755), dir("home/user/", 0o755),
		},
		check: func(t *testing.T, rootfs string, tm Template) {
			if tm.DefaultUser != "root" {
				t.Errorf("default user = %q, want root (the host's passwd must not count)", tm.DefaultUser)
			}
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newTestStore(t)
			tm, err := s.Import(t.Context(), "imported", bytes.NewReader(mkTar(t, c.gz, c.entries...)))
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			if tm.Name != "imported" || tm.RootFS != filepath.Join(s.Dir(), "imported", "rootfs") || tm.SizeBytes <= 0 || tm.Created.IsZero() {
				t.Errorf("template = %+v", tm)
			}
			got, err := s.Get("imported")
			if err != nil || got.RootFS != tm.RootFS || got.DefaultUser != tm.DefaultUser || !got.Created.Equal(tm.Created) {
				t.Errorf("Get = %+v, %v; want %+v", got, err, tm)
			}
			if left := storeEntries(t, s); len(left) != 1 || left[0] != "imported" {
				t.Errorf("store holds %v, want only the template", left)
			}
			c.check(t, tm.RootFS, tm)
		})
	}
}

func TestImportRejects(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshotDir(t, outside)
	valid := mkTar(t, false, file("f", 0o644, strings.Repeat("x", 2000)))
	cases := []struct {
		name string
		tar  []byte
	}{
		{"dot-dot", mkTar(t, false, file("../x", 0o644, "x"))},
		{"dot-dot inside", mkTar(t, false, dir("a/", 0o755), file("a/../../x", 0o644, "x"))},
		{"absolute", mkTar(t, false, file("/etc/x", 0o644, "x"))},
		{"absolute dir", mkTar(t, false, dir("/tmp/roost-evil/", 0o755))},
		{"file through symlink to /", mkTar(t, false, symlink("evil", "/"), file("evil/etc/x", 0o644, "x"))},
		{"file through symlink outside", mkTar(t, false, symlink("evil", outside), file("evil/pwned", 0o644, "x"))},
		{"overwrite through symlink outside", mkTar(t, false, symlink("evil", outside), file("evil/secret", 0o644, "gone"))},
		{"dir through symlink outside", mkTar(t, false, symlink("evil", outside), dir("evil/newdir/", 0o755))},
		{"symlink through symlink outside", mkTar(t, false, symlink("evil", outside), symlink("evil/l", "/"))},
		{"relative symlink up", mkTar(t, false, symlink("up", "../../../../.."), file("up/x", 0o644, "x"))},
		{"nested symlink", mkTar(t, false, dir("a/", 0o755), symlink("a/b", outside), file("a/b/c/x", 0o644, "x"))},
		{"hard link up", mkTar(t, false, hardlink("h", "../secret"))},
		{"hard link absolute", mkTar(t, false, hardlink("h", "/etc/passwd"))},
		{"hard link through symlink", mkTar(t, false, symlink("evil", outside), hardlink("h", "evil/secret"))},
		{"hard link to missing", mkTar(t, false, hardlink("h", "nothing"))},
		{"hard link to dir", mkTar(t, false, dir("d/", 0o755), hardlink("h", "d"))},
		{"file over non-empty dir", mkTar(t, false, dir("d/", 0o755), file("d/x", 0o644, "x"), file("d", 0o644, "x"))},
		{"root as file", mkTar(t, false, file(".", 0o644, "x"))},
		{"negative uid", mkTar(t, false, owned(file("f", 0o644, "x"), -5, 0))},
		{"empty", nil},
		{"no entries", mkTar(t, false)},
		{"garbage", []byte(strings.Repeat("not a tarball ", 100))},
		{"truncated in a file", valid[:512+1000]},
		{"truncated in a header", valid[:300]},
		{"gzip garbage", []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3}},
		{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0, 1, 2}},
		{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newTestStore(t)
			_, err := s.Import(t.Context(), "evil", bytes.NewReader(c.tar))
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("Import = %v, want ErrInvalid", err)
			}
			t.Logf("rejected: %v", err)
			if _, err := s.Get("evil"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("Get after a failed import = %v, want ErrNotFound", err)
			}
			if left := storeEntries(t, s); len(left) != 0 {
				t.Errorf("store holds %v after a failed import, want nothing", left)
			}
			if after := snapshotDir(t, outside); !maps.Equal(before, after) {
				t.Errorf("outside dir changed: %v, was %v", after, before)
			}
			for _, p := range []string{"/etc/x", "/x", "/tmp/roost-evil", "/pwned"} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s exists: written outside the store", p)
				}
			}
		})
	}
}

func TestImportConflictAndNames(t *testing.T) {
	s := newTestStore(t)
	tarball := mkTar(t, false, file("f", 0o644, "x"))
	if _, err := s.Import(t.Context(), "one", bytes.NewReader(tarball)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(t.Context(), "one", bytes.NewReader(tarball)); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("second Import = %v, want ErrConflict", err)
	}
	for _, name := range []string{"", "Upper", "../x", ".hidden", "a/b", strings.Repeat("a", 64)} {
		if _, err := s.Import(t.Context(), name, bytes.NewReader(tarball)); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Import(%q) = %v, want ErrInvalid", name, err)
		}
	}
}

func TestImportCancelled(t *testing.T) {
	s := newTestStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.Import(ctx, "cancelled", bytes.NewReader(mkTar(t, false, file("f", 0o644, "x"))))
	if err == nil {
		t.Fatal("Import with a cancelled context succeeded")
	}
	if left := storeEntries(t, s); len(left) != 0 {
		t.Errorf("store holds %v, want nothing", left)
	}
}

// FuzzImport feeds arbitrary bytes to Import: it must never panic, and
// nothing may appear outside the store, whatever the bytes say.
func FuzzImport(f *testing.F) {
	seeds := [][]ent{
		{dir("etc/", 0o755), file("etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\n"), symlink("lib", "usr/lib")},
		{symlink("evil", "/tmp"), file("evil/roost-fuzz-canary", 0o644, "x")},
		{symlink("evil", "../.."), file("evil/roost-fuzz-canary", 0o644, "x")},
		{file("a", 0o644, "x"), hardlink("b", "a"), hardlink("c", "../a")},
		{file("../roost-fuzz-canary", 0o644, "x")},
		{dir("ro/", 0o500), file("ro/f", 0o400, "x")},
	}
	for _, e := range seeds {
		f.Add(mkTar(f, false, e...))
		f.Add(mkTar(f, true, e...))
	}
	f.Add([]byte{})
	for _, name := range []string{"gnu-sparse.tar.gz", "pax-sparse.tar.gz"} {
		if data, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(data)
		}
	}
	// Sparse files are bounded for their cost in time; the fuzzer looks for
	// escapes and panics, and would otherwise spend its time on holes.
	maxSparseSize = 128 << 20
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		outside := filepath.Join(base, "outside")
		if err := os.Mkdir(outside, 0o755); err != nil {
			t.Fatal(err)
		}
		s := NewStore(filepath.Join(base, "store"), nil)
		tm, err := s.Import(t.Context(), "fuzz", bytes.NewReader(data))
		if err == nil {
			if err := s.Remove(tm.Name); err != nil {
				t.Fatalf("Remove: %v", err)
			}
		}
		if left := storeEntries(t, s); len(left) != 0 {
			t.Fatalf("store holds %v, want nothing (import err: %v)", left, err)
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Fatalf("written outside the store: %v", entries)
		}
		if entries, _ := os.ReadDir(base); len(entries) != 2 {
			t.Fatalf("written beside the store: %v", entries)
		}
		for _, p := range []string{"/tmp/roost-fuzz-canary", filepath.Join(filepath.Dir(base), "roost-fuzz-canary")} {
			if _, err := os.Lstat(p); err == nil {
				t.Fatalf("%s exists: written outside the store", p)
			}
		}
	})
}

func wantFile(t *testing.T, rootfs, rel, want string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rootfs, rel))
	if err != nil || string(b) != want {
		t.Errorf("%s = %.40q, %v; want %.40q", rel, b, err, want)
	}
}

func wantMode(t *testing.T, rootfs, rel string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(rootfs, rel))
	if err != nil || fi.Mode() != want {
		t.Errorf("%s mode = %v, %v; want %v", rel, fi.Mode(), err, want)
	}
}

func wantLink(t *testing.T, rootfs, rel, want string) {
	t.Helper()
	got, err := os.Readlink(filepath.Join(rootfs, rel))
	if err != nil || got != want {
		t.Errorf("%s -> %q, %v; want -> %q", rel, got, err, want)
	}
}

func wantOwner(t *testing.T, rootfs, rel string, uid, gid uint32) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(rootfs, rel))
	if err != nil {
		t.Error(err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != uid || st.Gid != gid {
		t.Errorf("%s owner = %d:%d, want %d:%d", rel, st.Uid, st.Gid, uid, gid)
	}
}

func inode(t *testing.T, rootfs, rel string) uint64 {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(rootfs, rel))
	if err != nil {
		t.Error(err)
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestImportSparse(t *testing.T) {
	// Made by GNU tar --sparse from a 64 MiB file with data only at its
	// ends, in its old GNU format and in PAX format 1.0.
	for _, name := range []string{"gnu-sparse.tar.gz", "pax-sparse.tar.gz"} {
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			s := newTestStore(t)
			tm, err := s.Import(t.Context(), "sparse", f)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(tm.RootFS, "sparse")
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) != 64<<20+5 || string(data[:4]) != "head" || string(data[len(data)-5:]) != "tail\n" {
				t.Errorf("sparse file: %d bytes, %q...%q", len(data), data[:4], data[len(data)-5:])
			}
			fi, _ := os.Stat(p)
			if blocks := fi.Sys().(*syscall.Stat_t).Blocks * 512; blocks > 1<<20 {
				t.Errorf("sparse file uses %d bytes of disk, want its holes kept", blocks)
			}
			if tm.SizeBytes > 1<<20 {
				t.Errorf("SizeBytes = %d, want the disk use, not the apparent size", tm.SizeBytes)
			}
		})
	}
	t.Run("too large", func(t *testing.T) {
		old := maxSparseSize
		maxSparseSize = 1 << 20
		defer func() { maxSparseSize = old }()
		f, err := os.Open(filepath.Join("testdata", "pax-sparse.tar.gz"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := newTestStore(t).Import(t.Context(), "sparse", f); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Import of a sparse file over the limit = %v, want ErrInvalid", err)
		}
	})
}

// failingReader returns data, then an error that is not the archive's.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestImportSourceError(t *testing.T) {
	broken := errors.New("connection reset")
	tarball := mkTar(t, false, file("a", 0o644, strings.Repeat("x", 4096)), file("b", 0o644, "y"))
	for _, cut := range []int{0, 100, 512 + 1000, 512 + 4096 + 100} {
		s := newTestStore(t)
		_, err := s.Import(t.Context(), "broken", &failingReader{data: tarball[:cut], err: broken})
		if !errors.Is(err, broken) || errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("cut at %d: Import = %v, want the reader's error, not ErrInvalid", cut, err)
		}
		if left := storeEntries(t, s); len(left) != 0 {
			t.Errorf("cut at %d: store holds %v", cut, left)
		}
	}
}
