package agent_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"connectrpc.com/connect"

	"roost.dev/roost/agent"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
	"roost.dev/roost/template"
	"roost.dev/roost/template/build"
	"roost.dev/roost/template/content"
)

// blobSink is a control plane's blob route that takes pushes: HEAD and
// PUT into its store, with the heartbeat token.
func blobSink(t *testing.T, blobs *content.Blobs) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer heartbeat-token" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		d, err := content.ParseDigest(r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:])
		if err != nil {
			http.NotFound(w, r)
			return
		}
		if r.Method == http.MethodPut {
			content.ReceiveBlob(w, r, blobs, d, 1<<30)
			return
		}
		content.ServeBlob(w, r, blobs, d)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestBuildTemplate(t *testing.T) {
	h := newHost(t)
	cpBlobs := content.NewBlobs(t.TempDir())
	sink := blobSink(t, cpBlobs)
	hostBlobs := content.NewBlobs(filepath.Join(h.dataDir, "blobs"))
	store := storeWith(t, h.base, template.Template{Name: "base"})
	// A build sandbox an agent left when it stopped mid-build.
	stale := filepath.Join(h.dataDir, "builds", "sandboxes", "build-stale")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	a := h.startWithConfig(store, func(c *agent.Config) {
		c.Blobs = hostBlobs
		c.BlobPush = agent.BlobPush{URL: sink.URL + "/v1/hosts/h1/blobs", Header: http.Header{"Authorization": {"Bearer heartbeat-token"}}}
	})
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale build sandbox after start-up: %v, want it removed", err)
	}
	spec := build.Spec{Stages: []build.Stage{{
		From: build.From{Template: "base"},
		Steps: []build.Step{
			{Type: "RUN", Args: []string{"echo hi > /f && whoami > /who && rm /etc/issue", "root"}},
			{Type: "RUN", Args: []string{"echo mine > ~/mine"}},
			{Type: "ENV", Args: []string{"BUILT", "yes"}},
		},
	}}, StartCmd: "sleep 1000"}
	specJSON, _ := json.Marshal(spec)

	stream, err := buildClient(a).BuildTemplate(ctxT(t), connect.NewRequest(&hostagentv1.BuildTemplateRequest{BuildId: "b1", SpecJson: string(specJSON)}))
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	var result *hostagentv1.BuildResult
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *hostagentv1.BuildTemplateResponse_Log:
			t.Logf("build log [%s] %s", ev.Log.GetStep(), ev.Log.GetMessage())
			if !slices.Contains(steps, ev.Log.GetStep()) {
				steps = append(steps, ev.Log.GetStep())
			}
		case *hostagentv1.BuildTemplateResponse_Result:
			result = ev.Result
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if result == nil || result.GetError() != "" {
		t.Fatalf("build result: %v", result)
	}
	for _, want := range []string{"base", "1", "2"} {
		if !slices.Contains(steps, want) {
			t.Errorf("log steps %q: want %q among them", steps, want)
		}
	}
	ref, err := agent.DecodeTemplateRef(result.GetTemplate().GetDigest(), result.GetTemplate().GetManifest())
	if err != nil {
		t.Fatal(err)
	}
	if ref.Manifest.Config.Env["BUILT"] != "yes" || ref.Manifest.Config.StartCmd != "sleep 1000" {
		t.Errorf("built config: %+v", ref.Manifest.Config)
	}
	// Everything the manifest names reached the control plane.
	for _, l := range ref.Manifest.Layers {
		if !cpBlobs.Has(l.Digest) {
			t.Errorf("layer %s not pushed", l.Digest)
		}
	}
	if !cpBlobs.Has(ref.Digest) {
		t.Errorf("manifest not pushed")
	}
	if left := a.m.List(); len(left) != 0 {
		t.Errorf("build sandboxes listed: %v", left)
	}
	if ents, _ := os.ReadDir(filepath.Join(h.dataDir, "builds", "sandboxes")); len(ents) != 0 {
		t.Errorf("build sandboxes left behind: %v", ents)
	}

	tree, err := template.NewStore(t.TempDir(), nil).Materialize(ctxT(t), ref.Manifest, ref.Digest, cpBlobs)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(tree.RootFS, "f")); err != nil || string(b) != "hi\n" {
		t.Errorf("/f in the built tree: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(tree.RootFS, "who")); err != nil || string(b) != "root\n" {
		t.Errorf("/who in the built tree: %q %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(tree.RootFS, "f")); err == nil && st.Sys() != nil {
		if uid := fileUID(st); uid != 0 {
			t.Errorf("/f owned by %d in the built tree, want 0 (unshifted)", uid)
		}
	}
	mine := filepath.Join(tree.RootFS, h.base.Workdir, "mine")
	if st, err := os.Stat(mine); err != nil || fileUID(st) != 1000 {
		t.Errorf("%s in the built tree: %v, want it owned by the base's user (1000), unshifted", mine, err)
	}
	if _, err := os.Lstat(filepath.Join(tree.RootFS, "etc/issue")); !os.IsNotExist(err) {
		t.Errorf("/etc/issue in the built tree: %v, want it deleted", err)
	}

	t.Run("a failing step", func(t *testing.T) {
		bad := build.Spec{Stages: []build.Stage{{From: build.From{Template: "base"}, Steps: []build.Step{
			{Type: "RUN", Args: []string{"echo about to fail; exit 7"}},
		}}}}
		b, _ := json.Marshal(bad)
		stream, err := buildClient(a).BuildTemplate(ctxT(t), connect.NewRequest(&hostagentv1.BuildTemplateRequest{BuildId: "b2", SpecJson: string(b)}))
		if err != nil {
			t.Fatal(err)
		}
		var result *hostagentv1.BuildResult
		for stream.Receive() {
			if r := stream.Msg().GetResult(); r != nil {
				result = r
			}
		}
		if result == nil || result.GetFailedStep() != "1" || result.GetExitCode() != 7 || !strings.Contains(result.GetError(), "about to fail") {
			t.Errorf("failed build's result: %v %v", result, stream.Err())
		}
	})

	t.Run("a bad spec", func(t *testing.T) {
		stream, err := buildClient(a).BuildTemplate(ctxT(t), connect.NewRequest(&hostagentv1.BuildTemplateRequest{SpecJson: `{"stages": []}`}))
		if err == nil {
			for stream.Receive() {
			}
			err = stream.Err()
		}
		wantCode(t, "empty spec", err, connect.CodeInvalidArgument)
	})
}

func fileUID(st os.FileInfo) uint32 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Uid
	}
	return 0
}

// bearerStreams sets the agent token on streaming calls, which a unary
// interceptor does not see.
type bearerStreams string

func (b bearerStreams) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }

func (b bearerStreams) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearerStreams) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// buildClient is the agent's client with the token on streams too.
func buildClient(a *agentProc) hostagentv1connect.HostAgentServiceClient {
	return hostagentv1connect.NewHostAgentServiceClient(a.srv.Client(), a.srv.URL, connect.WithInterceptors(bearerStreams(agentToken)))
}
