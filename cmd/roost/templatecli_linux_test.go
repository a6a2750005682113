package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestTemplateCLIImport runs `roost up` and the roost CLI as a user does:
// an OCI image layout directory and a docker save archive of one image
// are imported through the API, a root filesystem tarball from stdin into
// the host's own templates, and a sandbox of each runs; a Dockerfile with
// a syntax error fails before anything is sent, naming its line; rm
// removes a template of each kind.
func TestTemplateCLIImport(t *testing.T) {
	base, bin, work := processTest(t, "roost up, imports of a 300 MB image", "roost-template-cli.")
	dataDir := filepath.Join(work, "data")
	if err := os.MkdirAll(filepath.Join(dataDir, "templates"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(base.RootFS), filepath.Join(dataDir, "templates", "base")); err != nil {
		t.Fatal(err)
	}
	const key = "roost_test_template_cli_0123456789abcdef"
	addr := freeAddr(t)
	api := "http://" + addr
	up := start(t, work, "up", []string{"ROOST_API_KEY=" + key}, bin, "up", "--data-dir", dataDir, "--listen", addr, "--no-prune")
	waitHTTP(t, up, api+"/health")

	// cli runs the roost CLI; stdout is its answer, stderr its progress
	// (which the log shows).
	cli := func(stdin string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(bin, args...) // also from cleanups, after t's context ends
		cmd.Env = append(os.Environ(), "ROOST_API_URL="+api, "ROOST_API_KEY="+key)
		if stdin != "" {
			f, err := os.Open(stdin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cmd.Stdin = f
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		t.Logf("roost %s:\n%s%s", strings.Join(args, " "), out, stderr.String())
		if err != nil {
			err = fmt.Errorf("%w: %s", err, stderr.String())
		}
		return string(out), err
	}
	must := func(stdin string, args ...string) string {
		t.Helper()
		out, err := cli(stdin, args...)
		if err != nil {
			t.Fatalf("roost %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	runIn := func(tpl, script, want string) {
		t.Helper()
		id := strings.TrimSpace(must("", "sandbox", "create", "-t", tpl))
		killed := false
		t.Cleanup(func() { // before roost up stops, which leaves sandboxes running
			if !killed {
				_, _ = cli("", "sandbox", "kill", id)
			}
		})
		if got := must("", "exec", id, "--", "bash", "-c", script); got != want {
			t.Errorf("%s: %q, want %q", tpl, got, want)
		}
		must("", "sandbox", "kill", id)
		killed = true
	}

	rootfsTar := filepath.Join(work, "rootfs.tar")
	if out, err := exec.Command("tar", "--numeric-owner", "--xattrs", "-C", base.RootFS, "-cf", rootfsTar, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar base: %v\n%s", err, out)
	}
	img := imageOf(t, rootfsTar, work)
	layoutDir := filepath.Join(work, "layout")
	if _, err := layout.Write(layoutDir, empty.Index); err != nil {
		t.Fatal(err)
	}
	p, _ := layout.FromPath(layoutDir)
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(work, "image.tar")
	if err := tarball.WriteToFile(archive, name.MustParseReference("roost/cli:test"), img); err != nil {
		t.Fatal(err)
	}

	out := must("", "template", "import", "fromlayout", layoutDir)
	if !strings.Contains(out, "uploading OCI image layout") || !strings.Contains(out, "template fromlayout is ready") {
		t.Errorf("import of a layout said:\n%s", out)
	}
	runIn("fromlayout", "cat /etc/from-image; echo $FROM_IMAGE; pwd", "layer on top\nset in the image\n/home/user\n")
	out = must("", "template", "import", "fromarchive:v1", archive)
	if !strings.Contains(out, "uploading docker save archive") {
		t.Errorf("import of a docker save archive said:\n%s", out)
	}
	runIn("fromarchive:v1", "cat /etc/from-image", "layer on top\n")

	out = must(rootfsTar, "template", "import", "--data-dir", dataDir, "fromrootfs", "-")
	if !strings.Contains(out, "stdin is a root filesystem tarball: importing it into this host's templates") {
		t.Errorf("import of a rootfs tarball said:\n%s", out)
	}
	runIn("fromrootfs", "id -un; test -x /usr/bin/git && echo git", "user\ngit\n")

	// base is left out: here it is a link to the tests' cache, which a
	// host's listing skips.
	list := must("", "template", "list")
	for _, n := range []string{"fromlayout", "fromarchive", "fromrootfs"} {
		if !strings.Contains(list, n) {
			t.Errorf("roost template list lacks %s:\n%s", n, list)
		}
	}

	bad := filepath.Join(work, "bad")
	writeFile(t, filepath.Join(bad, "Dockerfile"), "FROM roost:base\nRUN echo ok\nFROBNICATE now\n")
	if out, err := cli("", "template", "build", "-t", "bad", bad); err == nil || !strings.Contains(err.Error(), "line 3") || strings.Contains(out, "building bad") {
		t.Errorf("build of a Dockerfile with an unknown instruction: %v\n%s", err, out)
	}

	must("", "template", "rm", "fromlayout")
	must("", "template", "rm", "--data-dir", dataDir, "fromrootfs")
	list = must("", "template", "list")
	if strings.Contains(list, "fromlayout") || strings.Contains(list, "fromrootfs") {
		t.Errorf("removed templates still listed:\n%s", list)
	}
}

// imageOf makes an image of the rootfs tar and one more layer, with a
// config naming user, workdir and env.
func imageOf(t *testing.T, rootfsTar, work string) v1.Image {
	t.Helper()
	top := filepath.Join(work, "top")
	writeFile(t, filepath.Join(top, "etc", "from-image"), "layer on top\n")
	topTar := filepath.Join(work, "top.tar")
	if out, err := exec.Command("tar", "-C", top, "-cf", topTar, "etc/from-image").CombinedOutput(); err != nil {
		t.Fatalf("tar top layer: %v\n%s", err, out)
	}
	var layers []v1.Layer
	for _, p := range []string{rootfsTar, topTar} {
		l, err := tarball.LayerFromFile(p)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", goruntime.GOARCH
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FROM_IMAGE=set in the image"}
	cfg.Config.User = "user"
	cfg.Config.WorkingDir = "/home/user"
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
