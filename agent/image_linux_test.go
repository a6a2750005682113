package agent_test

import (
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	goruntime "runtime"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"roost.dev/roost/agent"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/template/build"
	"roost.dev/roost/template/content"
)

// An image made from the base template, on a registry on loopback: a
// build from it (one RUN on top, start and ready commands) and a sandbox
// of the result with its server up.
func TestBuildFromImageAndCreate(t *testing.T) {
	h := newHost(t)
	// The image: base's tree as one layer, with a config of its own.
	scratch := content.NewBlobs(t.TempDir())
	man, _ := baseManifest(t, h.base, scratch, content.Config{})
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return scratch.Open(man.Layers[0].Digest) })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goruntime.GOARCH
	cf.Config = v1.Config{
		Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin", "FROM_IMAGE=yes"}, User: "user", WorkingDir: "/home/user",
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/roost/base:1"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}

	a := h.startWithConfig(storeWith(t, h.base), func(c *agent.Config) { c.Blobs = content.NewBlobs(t.TempDir()) })
	spec := build.Spec{Stages: []build.Stage{{
		From:  build.From{Image: ref, Insecure: true},
		Steps: []build.Step{{Type: "RUN", Args: []string{"echo built > ~/built.txt"}}},
	}}, StartCmd: "python3 -m http.server 8000", ReadyCmd: "curl -fs localhost:8000/built.txt"}
	specJSON, _ := json.Marshal(spec)
	stream, err := buildClient(a).BuildTemplate(ctxT(t), connect.NewRequest(&hostagentv1.BuildTemplateRequest{BuildId: "img", SpecJson: string(specJSON)}))
	if err != nil {
		t.Fatal(err)
	}
	var result *hostagentv1.BuildResult
	for stream.Receive() {
		if l := stream.Msg().GetLog(); l != nil {
			t.Logf("build log [%s] %s", l.GetStep(), l.GetMessage())
		}
		if res := stream.Msg().GetResult(); res != nil {
			result = res
		}
	}
	if err := stream.Err(); err != nil || result == nil || result.GetError() != "" {
		t.Fatalf("build: %v %v", result, err)
	}
	tr := result.GetTemplate()
	created, err := a.client.CreateSandbox(ctxT(t), connect.NewRequest(&hostagentv1.CreateSandboxRequest{
		Template: "from-image", TemplateRef: &hostagentv1.TemplateRef{Digest: tr.GetDigest(), Manifest: tr.GetManifest()},
	}))
	if err != nil {
		t.Fatal(err)
	}
	envd := created.Msg.GetSandbox().GetEnvdAddress()
	if out := mustExec(t, envd, "", `curl -fsS localhost:8000/built.txt; echo "$FROM_IMAGE"; whoami`); out != "built\nyes\nuser\n" {
		t.Errorf("sandbox of the image's template: %q", out)
	}
}
