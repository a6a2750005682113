package build

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"roost.dev/roost/template"
	"roost.dev/roost/template/content"
)

// testEnv is an Env for tests: a base is a template of the test's store
// (its tree as one layer, as the agent does for a host's own tree), and
// a RUN runs under unshare (new mount and pid namespaces, the root an
// overlay the test mounts over the working tree: real overlayfs, real
// whiteouts) as the step's user.
type testEnv struct {
	t     testing.TB
	store *template.Store
	blobs *content.Blobs
	runs  int
}

func (e *testEnv) Base(ctx context.Context, from From, log func(LogEntry)) (content.Manifest, content.Digest, error) {
	if from.Template == "" {
		return content.Manifest{}, "", fmt.Errorf("test env: only templates")
	}
	t, err := e.store.Get(from.Template)
	if err != nil {
		return content.Manifest{}, "", err
	}
	l, err := e.store.LayerOfTree(ctx, from.Template, e.blobs)
	if err != nil {
		return content.Manifest{}, "", err
	}
	m := content.Manifest{Schema: content.ManifestSchema, Layers: []content.Descriptor{l},
		Config: content.Config{User: t.DefaultUser, Workdir: t.Workdir, Env: t.Env, Source: "template " + from.Template}}
	d, err := e.blobs.PutManifest(ctx, m)
	return m, d, err
}

func (e *testEnv) Run(ctx context.Context, rootfs string, r RunRequest, out io.Writer) (RunResult, error) {
	e.runs++
	o, err := lookupOwner(rootfs, r.User)
	if err != nil {
		return RunResult{}, err
	}
	dir, err := os.MkdirTemp("", "roost-build-run-")
	if err != nil {
		return RunResult{}, err
	}
	upper, work, merged := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return RunResult{}, err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", rootfs, upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		os.RemoveAll(dir)
		return RunResult{}, fmt.Errorf("mount overlay: %w", err)
	}
	var once sync.Once
	done := func() {
		once.Do(func() {
			_ = unix.Unmount(merged, unix.MNT_DETACH)
			os.RemoveAll(dir)
		})
	}
	args := append([]string{"--mount", "--pid", "--fork", "--root=" + merged, "--wd=" + r.Workdir,
		"--setuid=" + strconv.Itoa(o.uid), "--setgid=" + strconv.Itoa(o.gid), "--"}, r.Argv...)
	cmd := exec.CommandContext(ctx, "unshare", args...)
	for k, v := range r.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return RunResult{ExitCode: ee.ExitCode(), Upper: upper, Done: done}, nil
	}
	if err != nil {
		done()
		return RunResult{}, err
	}
	return RunResult{Upper: upper, Done: done}, nil
}

// miniTree makes a small root filesystem in dir from the host's shell,
// a few coreutils and their libraries, with users root and user (1000).
func miniTree(t testing.TB, dir string) {
	t.Helper()
	bins := []string{"/bin/sh", "/usr/bin/dash", "/usr/bin/id", "/usr/bin/touch", "/usr/bin/mkdir", "/usr/bin/rm", "/usr/bin/cat", "/usr/bin/ls", "/usr/bin/echo", "/usr/bin/chmod"}
	need := map[string]bool{}
	for _, b := range bins {
		need[b] = true
		out, err := exec.Command("ldd", b).Output()
		if err != nil {
			continue // static, or a script
		}
		for _, line := range strings.Split(string(out), "\n") {
			for _, f := range strings.Fields(line) {
				if strings.HasPrefix(f, "/") {
					need[f] = true
				}
			}
		}
	}
	for p := range need {
		mirror(t, dir, p)
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
		"etc/group":  "root:x:0:\nuser:x:1000:\n",
		"etc/motd":   "welcome\n",
		"opt/d/old":  "old\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"home/user", "root", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(dir, "home/user"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
}

// mirror copies host file p into root at the same path, with the
// symlinks on its way (/bin -> usr/bin) made as the host has them.
func mirror(t testing.TB, root, p string) {
	t.Helper()
	cur := "/"
	parts := strings.Split(strings.Trim(p, "/"), "/")
	for i, c := range parts {
		next := filepath.Join(cur, c)
		st, err := os.Lstat(next)
		if err != nil {
			t.Fatal(err)
		}
		in := filepath.Join(root, next)
		switch {
		case st.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(next)
			if _, err := os.Lstat(in); err != nil {
				if err := os.MkdirAll(filepath.Dir(in), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, in); err != nil {
					t.Fatal(err)
				}
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(cur, target)
			}
			mirror(t, root, filepath.Join(append([]string{target}, parts[i+1:]...)...))
			return
		case i == len(parts)-1:
			data, err := os.ReadFile(next)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(in), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(in, data, st.Mode().Perm()); err != nil {
				t.Fatal(err)
			}
		}
		cur = next
	}
}

// newTestBuilder returns a Builder over a fresh store holding the mini
// tree as template "mini".
func newTestBuilder(t testing.TB) (*Builder, *testEnv) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("builds need root (overlay mounts, file ownership)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare")
	}
	dir := t.TempDir()
	store := template.NewStore(filepath.Join(dir, "templates"), slog.New(slog.DiscardHandler))
	tree := filepath.Join(dir, "mini")
	miniTree(t, tree)
	if _, err := store.Import(t.Context(), "mini", tarOfDir(t, tree)); err != nil {
		t.Fatal(err)
	}
	blobs := content.NewBlobs(filepath.Join(dir, "blobs"))
	env := &testEnv{t: t, store: store, blobs: blobs}
	return &Builder{Blobs: blobs, Templates: store, Dir: filepath.Join(dir, "build"), Env: env}, env
}

// tarOfDir is the tar of dir's tree (the layer writer of an upper dir
// without whiteouts is just that).
func tarOfDir(t testing.TB, dir string) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	if err := LayerOfUpper(t.Context(), dir, 0, &buf); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// tarOf is a tar of the files (name → body; a name ending in / is a
// directory).
func tarOf(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		hdr := &tar.Header{Name: name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(files[name]))}
		if strings.HasSuffix(name, "/") {
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[name])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sysStat(st os.FileInfo) *unix.Stat_t {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return &unix.Stat_t{Uid: s.Uid, Gid: s.Gid}
	}
	return &unix.Stat_t{}
}
