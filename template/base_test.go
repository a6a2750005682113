package template_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"roost.dev/roost/template"
	"roost.dev/roost/template/templatetest"
)

// TestEnsureBase builds base into the shared test cache (or finds it
// there) and checks what sandboxes rely on.
func TestEnsureBase(t *testing.T) {
	b := templatetest.Base(t)
	t.Logf("base: %d MiB, created %s, in %s", b.SizeBytes>>20, b.Created, b.RootFS)
	if b.Name != template.BaseName || b.Source != template.SourceDebootstrap || b.DefaultUser != "user" || b.Workdir != "/home/user" || b.SizeBytes <= 0 {
		t.Errorf("template = %+v", b)
	}
	root := b.RootFS
	if !template.IsCurrentBase(b) {
		t.Errorf("base recipe %q is not this roost's", b.Recipe)
	}
	for _, bin := range []string{"bash", "python3", "curl", "sudo", "ps", "ip", "id", "git"} {
		if _, err := os.Stat(filepath.Join(root, "usr/bin", bin)); err != nil {
			if _, err2 := os.Stat(filepath.Join(root, "usr/sbin", bin)); err2 != nil {
				t.Errorf("%s missing: %v", bin, err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")); err != nil {
		t.Errorf("CA certificates: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(root, "usr/bin/sudo")); err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode()&fs.ModeSetuid == 0 || st.Uid != 0 {
			t.Errorf("sudo mode %v owner %d, want setuid root", fi.Mode(), st.Uid)
		}
	}

	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Split(string(passwd), "\n"), "user:x:1000:1000::/home/user:/bin/bash") {
		t.Errorf("no passwd entry for user 1000:\n%s", passwd)
	}
	if group, _ := os.ReadFile(filepath.Join(root, "etc/group")); !strings.Contains(string(group), "\nuser:x:1000:") {
		t.Error("no group user with gid 1000")
	}
	if fi, err := os.Stat(filepath.Join(root, "home/user")); err != nil || !fi.IsDir() || fi.Sys().(*syscall.Stat_t).Uid != 1000 {
		t.Errorf("home/user: %v, %v; want a directory owned by 1000", fi, err)
	}
	if _, err := os.Stat(filepath.Join(root, "home/user/.bashrc")); err != nil {
		t.Errorf("home not populated from /etc/skel: %v", err)
	}
	sudoers := filepath.Join(root, "etc/sudoers.d/user")
	fi, err := os.Lstat(sudoers)
	if err != nil || fi.Mode() != 0o440 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("sudoers.d/user: %v, %v; want mode 0440 owned by root", fi, err)
	}
	if data, _ := os.ReadFile(sudoers); !strings.Contains(string(data), "user ALL=(ALL:ALL) NOPASSWD: ALL") {
		t.Errorf("sudoers.d/user = %q", data)
	}
	for _, f := range []string{"etc/resolv.conf", "etc/hostname", "etc/hosts"} {
		if fi, err := os.Lstat(filepath.Join(root, f)); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s: %v, %v; want a plain file", f, fi, err)
		}
	}
	for _, pattern := range []string{"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_Packages"} {
		if m, _ := filepath.Glob(filepath.Join(root, pattern)); len(m) > 0 {
			t.Errorf("apt caches left: %v", m)
		}
	}
	// The tree works: run its own python3 and look the user up with its
	// own tools.
	out, err := exec.Command("chroot", root, "/usr/bin/python3", "-c", "import ssl, json; print('ok')").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("python3 in the tree: %q, %v", out, err)
	}
	out, err = exec.Command("chroot", root, "/usr/bin/git", "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "git version ") {
		t.Errorf("git in the tree: %q, %v", out, err)
	}
	out, err = exec.Command("chroot", root, "/usr/bin/id", "user").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "uid=1000(user) gid=1000(user)") {
		t.Errorf("id user in the tree: %q, %v", out, err)
	}

	// Cached: a second EnsureBase returns the same template without
	// building (no progress at all).
	s := templatetest.Store(t)
	var progress bytes.Buffer
	again, err := s.EnsureBase(t.Context(), &progress)
	if err != nil || !again.Created.Equal(b.Created) || progress.Len() != 0 {
		t.Errorf("second EnsureBase = %+v, %v, progress %q; want the cached template, no build", again, err, progress.String())
	}
	list, err := s.List()
	if err != nil || !slices.ContainsFunc(list, func(tm template.Template) bool { return tm.Name == template.BaseName }) {
		t.Errorf("List = %v, %v; want base in it", list, err)
	}
}

// TestImportRoundTrip packs base with GNU tar, as `docker export` would
// hand over a tree, imports it, and compares the two trees entry by
// entry: type, mode (setuid sudo included), owner, size, link target,
// content and hard-link counts.
func TestImportRoundTrip(t *testing.T) {
	b := templatetest.Base(t)
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("tar not installed")
	}
	s := template.NewStore(filepath.Join(t.TempDir(), "templates"), nil)
	cmd := exec.CommandContext(t.Context(), tarBin, "--numeric-owner", "--xattrs", "-C", b.RootFS, "-cf", "-", ".")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	imported, err := s.Import(t.Context(), "copy", out)
	took := time.Since(start)
	if werr := cmd.Wait(); err == nil && werr != nil {
		t.Fatalf("tar: %v", werr)
	}
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	t.Logf("imported %d MiB in %s", imported.SizeBytes>>20, took.Round(time.Millisecond))
	if imported.DefaultUser != "user" || imported.Workdir != "/home/user" {
		t.Errorf("defaults = %q %q, want user /home/user", imported.DefaultUser, imported.Workdir)
	}
	links := linksWithin(t, b.RootFS)
	n := 0
	err = filepath.WalkDir(b.RootFS, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(b.RootFS, p)
		n++
		want, err := os.Lstat(p)
		if err != nil {
			return err
		}
		got, err := os.Lstat(filepath.Join(imported.RootFS, rel))
		if err != nil {
			if want.Mode()&(fs.ModeDevice|fs.ModeCharDevice) != 0 {
				return nil // device nodes are skipped on import
			}
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		ws, gs := want.Sys().(*syscall.Stat_t), got.Sys().(*syscall.Stat_t)
		wantLinks := ws.Nlink
		if !d.IsDir() {
			wantLinks = links[ws.Ino]
		}
		if got.Mode() != want.Mode() || gs.Uid != ws.Uid || gs.Gid != ws.Gid || gs.Nlink != wantLinks || (!d.IsDir() && got.Size() != want.Size()) {
			t.Errorf("%s: got %v %d:%d nlink %d size %d, want %v %d:%d nlink %d size %d",
				rel, got.Mode(), gs.Uid, gs.Gid, gs.Nlink, got.Size(), want.Mode(), ws.Uid, ws.Gid, wantLinks, want.Size())
		}
		if !d.IsDir() && !got.ModTime().Equal(want.ModTime().Truncate(time.Second)) && !got.ModTime().Equal(want.ModTime()) {
			t.Errorf("%s: mtime %v, want %v", rel, got.ModTime(), want.ModTime())
		}
		switch {
		case want.Mode()&fs.ModeSymlink != 0:
			wl, _ := os.Readlink(p)
			gl, _ := os.Readlink(filepath.Join(imported.RootFS, rel))
			if gl != wl {
				t.Errorf("%s -> %q, want %q", rel, gl, wl)
			}
		case want.Mode().IsRegular():
			wb, _ := os.ReadFile(p)
			gb, _ := os.ReadFile(filepath.Join(imported.RootFS, rel))
			if !bytes.Equal(wb, gb) {
				t.Errorf("%s: content differs", rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compared %d entries", n)
}

// linksWithin counts the names each inode of a non-directory has inside
// root: the hard links an import of the tree must make again. (Trees
// built from base share its files' inodes, so their link counts on disk
// can be higher.)
func linksWithin(t *testing.T, root string) map[uint64]uint64 {
	t.Helper()
	links := map[uint64]uint64{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		links[info.Sys().(*syscall.Stat_t).Ino]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return links
}
