package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template"
	"roost.dev/roost/template/content"
)

var epoch = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// ent is a tar entry: its header, and a body for regular files.
type ent struct {
	hdr  tar.Header
	body string
}

func dir(name string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: epoch}}
}
func file(name, body string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: epoch}, body: body}
}
func symlink(name, target string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: epoch}}
}
func hardlink(name, target string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, ModTime: epoch}}
}

func mkLayer(t *testing.T, entries ...ent) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mkImage(t *testing.T, arch string, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", arch, cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

const passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"

// appImage is an image of two layers: a base, then changes with a
// whiteout, symlinks and hard links.
func appImage(t *testing.T) v1.Image {
	base := mkLayer(t, dir("etc/"), file("etc/passwd", passwd), dir("usr/"), dir("usr/bin/"), file("usr/bin/server", "#!/bin/sh\n"),
		symlink("bin", "usr/bin"), dir("home/"), dir("home/app/"), file("etc/old.conf", "old"))
	top := mkLayer(t, dir("etc/"), file("etc/.wh.old.conf", ""), dir("app/"), file("app/main.py", "print(1)\n"),
		hardlink("app/main-link.py", "app/main.py"), symlink("app/conf", "/etc/passwd"))
	return mkImage(t, runtime.GOARCH, v1.Config{
		Env:        []string{"PATH=/usr/bin:/bin", "OPTS=a=b"},
		WorkingDir: "/app",
		User:       "1000",
		Entrypoint: []string{"/usr/bin/server"},
		Cmd:        []string{"--port", "8000", "it's"},
	}, base, top)
}

// newRegistry starts a registry on loopback; wrap, if set, wraps its
// handler.
func newRegistry(t *testing.T, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func push(t *testing.T, ref string, img v1.Image, opts ...remote.Option) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, opts...); err != nil {
		t.Fatal(err)
	}
}

func newStore(t *testing.T) *template.Store {
	return template.NewStore(filepath.Join(t.TempDir(), "templates"), slog.New(slog.DiscardHandler))
}

// checkAppTree checks the tree Materialize made of appImage.
func checkAppTree(t *testing.T, tm template.Template) {
	t.Helper()
	root := tm.RootFS
	if _, err := os.Lstat(filepath.Join(root, "etc/old.conf")); err == nil {
		t.Error("whiteout not applied")
	}
	if b, err := os.ReadFile(filepath.Join(root, "app/main-link.py")); err != nil || string(b) != "print(1)\n" {
		t.Errorf("hard link: %q %v", b, err)
	}
	var a, b os.FileInfo
	a, _ = os.Stat(filepath.Join(root, "app/main.py"))
	b, _ = os.Stat(filepath.Join(root, "app/main-link.py"))
	if !os.SameFile(a, b) {
		t.Error("hard link is a copy")
	}
	if l, _ := os.Readlink(filepath.Join(root, "app/conf")); l != "/etc/passwd" {
		t.Errorf("symlink = %q", l)
	}
	if tm.DefaultUser != "app" || tm.Workdir != "/app" || tm.Env["OPTS"] != "a=b" || tm.StartCmd != `/usr/bin/server --port 8000 'it'\''s'` {
		t.Errorf("template %+v", tm)
	}
}

func TestPullAndMaterialize(t *testing.T) {
	host := newRegistry(t, nil)
	app := appImage(t)
	other := mkImage(t, "s390x", v1.Config{}, mkLayer(t, file("other-arch", "x")))
	otherArch := "arm64"
	if runtime.GOARCH == "arm64" {
		otherArch = "amd64"
	}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch}}},
		mutate.IndexAddendum{Add: app, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	r, _ := name.ParseReference(host + "/team/app:v1")
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}

	blobs := content.NewBlobs(t.TempDir())
	var msgs []string
	m, d, err := Pull(t.Context(), host+"/team/app:v1", Registry{}, blobs, func(s string) { msgs = append(msgs, s) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("progress: %q", msgs)
	if len(m.Layers) != 2 || m.Config.Source != "image "+host+"/team/app:v1" || m.Config.User != "1000" || m.Config.Workdir != "/app" || m.Config.Env["PATH"] != "/usr/bin:/bin" {
		t.Fatalf("manifest %+v", m)
	}
	diffIDs, _ := app.ConfigFile()
	for i, l := range m.Layers {
		if string(l.Digest) != diffIDs.RootFS.DiffIDs[i].String() || !blobs.Has(l.Digest) {
			t.Errorf("layer %d is %s, want diffID %s", i, l.Digest, diffIDs.RootFS.DiffIDs[i])
		}
	}
	otherCfg, _ := other.ConfigFile()
	if blobs.Has(content.Digest(otherCfg.RootFS.DiffIDs[0].String())) {
		t.Error("the other platform's layer was pulled")
	}
	if got, err := blobs.Manifest(d); err != nil || len(got.Layers) != 2 {
		t.Fatalf("manifest blob: %v", err)
	}

	// Again: the same manifest, layers not fetched.
	msgs = nil
	if _, d2, err := Pull(t.Context(), host+"/team/app:v1", Registry{Insecure: true}, blobs, func(s string) { msgs = append(msgs, s) }); err != nil || d2 != d {
		t.Fatalf("second pull: %s, %v", d2, err)
	}
	if !strings.Contains(strings.Join(msgs, "\n"), "present") {
		t.Errorf("second pull fetched again: %q", msgs)
	}

	tm, err := newStore(t).Materialize(t.Context(), m, d, blobs)
	if err != nil {
		t.Fatal(err)
	}
	checkAppTree(t, tm)
}

func TestPullAuth(t *testing.T) {
	host := newRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	push(t, host+"/private/app:v1", appImage(t), remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}))
	blobs := content.NewBlobs(t.TempDir())

	_, _, err := Pull(t.Context(), host+"/private/app:v1", Registry{}, blobs, nil)
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "registry answered 401") || !strings.Contains(err.Error(), "pass credentials") {
		t.Fatalf("anonymous: %v", err)
	}
	t.Logf("anonymous: %v", err)
	_, _, err = Pull(t.Context(), host+"/private/app:v1", Registry{Username: "alice", Password: "wrong"}, blobs, nil)
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "check the credentials") {
		t.Fatalf("wrong password: %v", err)
	}
	if _, _, err := Pull(t.Context(), host+"/private/app:v1", Registry{Username: "alice", Password: "s3cret"}, blobs, nil); err != nil {
		t.Fatalf("with credentials: %v", err)
	}
}

func TestPullErrors(t *testing.T) {
	host := newRegistry(t, nil)
	push(t, host+"/team/app:v1", appImage(t))
	blobs := content.NewBlobs(t.TempDir())
	for _, c := range []struct {
		ref  string
		want error
	}{
		{host + "/team/app:v2", errdefs.ErrNotFound},
		{host + "/team/nothing:v1", errdefs.ErrNotFound},
		{host + "/team/app@sha256:" + strings.Repeat("0", 64), errdefs.ErrNotFound},
		{"Not A Reference", errdefs.ErrInvalid},
		{host + "/team/app:bad:tag", errdefs.ErrInvalid},
		{"", errdefs.ErrInvalid},
	} {
		_, _, err := Pull(t.Context(), c.ref, Registry{}, blobs, nil)
		if !errors.Is(err, c.want) {
			t.Errorf("Pull(%q) = %v, want %v", c.ref, err, c.want)
		} else {
			t.Logf("Pull(%q): %v", c.ref, err)
		}
	}
	// A registry nobody listens at.
	srv := httptest.NewServer(http.NotFoundHandler())
	gone := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	if _, _, err := Pull(t.Context(), gone+"/team/app:v1", Registry{}, blobs, nil); !errors.Is(err, errdefs.ErrUnreachable) {
		t.Errorf("unreachable registry: %v", err)
	}
}

func TestPullInsecureTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	push(t, host+"/team/app:v1", appImage(t), remote.WithTransport(srv.Client().Transport))
	blobs := content.NewBlobs(t.TempDir())
	if _, _, err := Pull(t.Context(), host+"/team/app:v1", Registry{}, blobs, nil); err == nil {
		t.Fatal("a self-signed registry was trusted without Insecure")
	}
	if _, _, err := Pull(t.Context(), host+"/team/app:v1", Registry{Insecure: true}, blobs, nil); err != nil {
		t.Fatalf("Insecure: %v", err)
	}
}

// lyingLayer claims a diffID its bytes do not have.
type lyingLayer struct {
	v1.Layer
	diffID v1.Hash
}

func (l lyingLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }

func TestPullLyingRegistry(t *testing.T) {
	host := newRegistry(t, nil)
	honest := mkLayer(t, file("a", "the real bytes"))
	claimed, _, _ := v1.SHA256(strings.NewReader("other bytes"))
	push(t, host+"/team/liar:v1", mkImage(t, runtime.GOARCH, v1.Config{}, lyingLayer{honest, claimed}))
	blobs := content.NewBlobs(t.TempDir())
	_, _, err := Pull(t.Context(), host+"/team/liar:v1", Registry{}, blobs, nil)
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Pull = %v, want ErrInvalid", err)
	}
	t.Logf("refused: %v", err)
	if list, _ := blobs.List(); len(list) != 0 {
		t.Fatalf("blobs kept: %v", list)
	}
}

func TestFromLayoutAndArchive(t *testing.T) {
	app := appImage(t)
	blobs := content.NewBlobs(t.TempDir())
	store := newStore(t)

	dir := filepath.Join(t.TempDir(), "layout")
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: app, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}})
	if _, err := layout.Write(dir, idx); err != nil {
		t.Fatal(err)
	}
	m, d, err := FromLayout(t.Context(), dir, blobs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.Source != "layout layout" {
		t.Errorf("source %q", m.Config.Source)
	}
	tm, err := store.Materialize(t.Context(), m, d, blobs)
	if err != nil {
		t.Fatal(err)
	}
	checkAppTree(t, tm)

	archive := filepath.Join(t.TempDir(), "app.tar")
	tag, _ := name.NewTag("example.com/team/app:v1")
	if err := tarball.WriteToFile(archive, tag, app); err != nil {
		t.Fatal(err)
	}
	m2, d2, err := FromArchive(t.Context(), archive, content.NewBlobs(t.TempDir()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(m2.Layers) != 2 || m2.Layers[0] != m.Layers[0] || m2.Config.StartCmd != m.Config.StartCmd || d2 == "" {
		t.Fatalf("archive manifest %+v", m2)
	}

	if _, _, err := FromArchive(t.Context(), filepath.Join(t.TempDir(), "none.tar"), blobs, nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing archive: %v", err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.tar")
	_ = os.WriteFile(garbage, []byte(strings.Repeat("not a tar ", 200)), 0o644)
	if _, _, err := FromArchive(t.Context(), garbage, blobs, nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("garbage archive: %v", err)
	}
	if _, _, err := FromLayout(t.Context(), t.TempDir(), blobs, nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("empty layout dir: %v", err)
	}
	wrong := filepath.Join(t.TempDir(), "wrong")
	other := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: app, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "s390x-not"}}})
	if _, err := layout.Write(wrong, other); err != nil {
		t.Fatal(err)
	}
	if _, _, err := FromLayout(t.Context(), wrong, blobs, nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("layout without this platform: %v", err)
	}
}

func TestLayerBombAndLinkedLayout(t *testing.T) {
	old := maxLayerBytes
	maxLayerBytes = 1 << 20
	defer func() { maxLayerBytes = old }()
	host := newRegistry(t, nil)
	push(t, host+"/team/bomb:v1", mkImage(t, runtime.GOARCH, v1.Config{}, mkLayer(t, file("zeros", strings.Repeat("\x00", 2<<20)))))
	blobs := content.NewBlobs(t.TempDir())
	if _, _, err := Pull(t.Context(), host+"/team/bomb:v1", Registry{}, blobs, nil); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "expands to more than") {
		t.Fatalf("a layer over the bound: %v", err)
	}
	if list, _ := blobs.List(); len(list) != 0 {
		t.Fatalf("blobs kept: %v", list)
	}

	// A layout whose blob is a symlink (to /dev/zero) is refused unread.
	dir := filepath.Join(t.TempDir(), "layout")
	app := appImage(t)
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: app, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}})
	if _, err := layout.Write(dir, idx); err != nil {
		t.Fatal(err)
	}
	cf, _ := app.Manifest()
	blob := filepath.Join(dir, "blobs", "sha256", cf.Layers[0].Digest.Hex)
	if err := os.Remove(blob); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", blob); err != nil {
		t.Fatal(err)
	}
	if _, _, err := FromLayout(t.Context(), dir, blobs, nil); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("layout with a symlinked blob: %v", err)
	}
}

func TestMaliciousImage(t *testing.T) {
	host := newRegistry(t, nil)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := mkLayer(t, dir("etc/"), file("etc/passwd", passwd), symlink("out", outside))
	for _, c := range []struct {
		name  string
		layer v1.Layer
	}{
		{"dot-dot", mkLayer(t, file("../x", "x"))},
		{"deep dot-dot", mkLayer(t, dir("a/"), file("a/../../../x", "x"))},
		{"absolute symlink then a write through it", mkLayer(t, symlink("root", "/"), file("root/tmp/roost-pwned", "x"))},
		{"write through a lower layer's symlink", mkLayer(t, file("out/secret", "overwritten"))},
		{"hard link to /etc/shadow", mkLayer(t, hardlink("shadow", "/etc/shadow"))},
		{"hard link up", mkLayer(t, hardlink("shadow", "../../../../etc/shadow"))},
		{"whiteout through a symlink", mkLayer(t, file("out/.wh.secret", ""))},
	} {
		t.Run(c.name, func(t *testing.T) {
			ref := host + "/evil/" + strings.ToLower(strings.Map(func(r rune) rune {
				if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
					return r
				}
				return '-'
			}, c.name)) + ":v1"
			push(t, ref, mkImage(t, runtime.GOARCH, v1.Config{}, base, c.layer))
			blobs := content.NewBlobs(t.TempDir())
			m, d, err := Pull(t.Context(), ref, Registry{}, blobs, nil)
			if err != nil {
				t.Fatal(err)
			}
			store := newStore(t)
			_, err = store.Materialize(t.Context(), m, d, blobs)
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("Materialize = %v, want ErrInvalid", err)
			}
			t.Logf("refused: %v", err)
			if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "keep" {
				t.Error("a file outside was overwritten")
			}
			entries, _ := os.ReadDir(outside)
			if len(entries) != 1 {
				t.Errorf("outside holds %d entries", len(entries))
			}
			for _, p := range []string{"/tmp/roost-pwned", filepath.Join(filepath.Dir(store.Dir()), "x")} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s written", p)
				}
			}
			if list, _ := store.List(); len(list) != 0 {
				t.Errorf("store holds %v", list)
			}
		})
	}
}
