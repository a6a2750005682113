package main

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestClusterTemplates runs `roost server` with two `roost agent`s, each
// with a template store of its own that holds only base, and the roost
// CLI as a user runs it: a Dockerfile built on one host and an image
// imported from a registry on loopback are created on both hosts (the
// other pulls the layers from the control plane), and run there.
func TestClusterTemplates(t *testing.T) {
	base, bin, work := processTest(t, "a server, two agents, builds and pulls", "roost-cluster-tpl.")

	const key = "roost_test_cluster_templates_0123456789"
	srv := startServer(t, work, bin, key)
	serverDir, api := srv.dir, srv.api
	for i := range 2 {
		dir := filepath.Join(work, fmt.Sprintf("agent%d", i))
		// base is shared with the tests' cache; every other tree is the
		// agent's own.
		if err := os.MkdirAll(filepath.Join(dir, "templates"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Dir(base.RootFS), filepath.Join(dir, "templates", "base")); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "server", "token", "--data-dir", serverDir, "--ttl", "5m").Output()
		if err != nil {
			t.Fatalf("roost server token: %v", err)
		}
		p := start(t, work, fmt.Sprintf("agent%d", i), nil, bin, "agent", "--data-dir", dir, "--listen", freeAddr(t),
			"--no-prune", "--server", api, "--registration-token", strings.TrimSpace(string(out)))
		waitRegistered(t, p, dir)
	}
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), bin, args...)
		cmd.Env = append(os.Environ(), "ROOST_API_URL="+api, "ROOST_API_KEY="+key)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("roost %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	ctxDir := t.TempDir()
	writeFile(t, filepath.Join(ctxDir, "hello.txt"), "hello from the context\n")
	writeFile(t, filepath.Join(ctxDir, "Dockerfile"), "FROM roost:base\nRUN echo built on a host > /built\nCOPY hello.txt /srv/\n")
	started := time.Now()
	t.Logf("roost template build:\n%s", cli("template", "build", "-t", "clustered", ctxDir))
	t.Logf("built in %v", time.Since(started).Round(time.Millisecond))
	wantOnBothHosts(t, api, key, "clustered", "cat /built /srv/hello.txt", "built on a host\nhello from the context\n")

	ref := pushBaseImage(t, base.RootFS)
	started = time.Now()
	t.Logf("roost template import:\n%s", cli("template", "import", "fromimage", ref, "--insecure-registry"))
	t.Logf("imported in %v", time.Since(started).Round(time.Millisecond))
	wantOnBothHosts(t, api, key, "fromimage", "cat /etc/from-image; echo $FROM_IMAGE", "layer on top\nset in the image\n")

	list := cli("template", "list")
	for _, name := range []string{"clustered", "fromimage"} {
		if !strings.Contains(list, name) {
			t.Errorf("roost template list lacks %s:\n%s", name, list)
		}
	}
}

// wantOnBothHosts creates two sandboxes of tpl, which the scheduler puts
// on the two hosts, and runs cmd in each.
func wantOnBothHosts(t *testing.T, api, key, tpl, cmd, want string) {
	t.Helper()
	hosts := map[string]bool{}
	for range 2 {
		var sb struct {
			ID       string `json:"sandboxID"`
			ClientID string `json:"clientID"`
		}
		created := time.Now()
		apiCall(t, "POST", api+"/v2/sandboxes", key, `{"templateID":"`+tpl+`","timeout":300}`, http.StatusCreated, &sb)
		t.Logf("%s: sandbox %s on %s created in %v", tpl, sb.ID, sb.ClientID, time.Since(created).Round(time.Millisecond))
		hosts[sb.ClientID] = true
		// Kept until both are made (the next goes to the other host), and
		// deleted before the agents stop, which leave sandboxes running.
		t.Cleanup(func() {
			req, _ := http.NewRequest("DELETE", api+"/sandboxes/"+sb.ID, nil)
			req.Header.Set("X-API-Key", key)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
		var res struct {
			Stdout, Stderr string
			ExitCode       int
		}
		body := fmt.Sprintf(`{"cmd":%q}`, cmd)
		apiCall(t, "POST", api+"/v1/sandboxes/"+sb.ID+"/exec", key, body, http.StatusOK, &res)
		if res.ExitCode != 0 || res.Stdout != want {
			t.Errorf("%s on %s: %q exit %d (stderr %q), want %q", tpl, sb.ClientID, res.Stdout, res.ExitCode, res.Stderr, want)
		}
	}
	if len(hosts) != 2 {
		t.Errorf("%s: sandboxes ran on %v, want both hosts", tpl, hosts)
	}
}

// pushBaseImage serves a registry on loopback holding an image made of
// the base tree and one layer more, and returns its reference.
func pushBaseImage(t *testing.T, rootfs string) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	layerTar := filepath.Join(t.TempDir(), "base.tar")
	if out, err := exec.Command("tar", "--numeric-owner", "--xattrs", "-C", rootfs, "-cf", layerTar, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar base: %v\n%s", err, out)
	}
	top := t.TempDir()
	writeFile(t, filepath.Join(top, "etc", "from-image"), "layer on top\n")
	topTar := filepath.Join(t.TempDir(), "top.tar")
	if out, err := exec.Command("tar", "-C", top, "-cf", topTar, "etc/from-image").CombinedOutput(); err != nil {
		t.Fatalf("tar top layer: %v\n%s", err, out)
	}
	var layers []v1.Layer
	for _, p := range []string{layerTar, topTar} {
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
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	ref := strings.TrimPrefix(srv.URL, "http://") + "/roost/base:test"
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
