package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
	"roost.dev/roost/template/build"
	"roost.dev/roost/template/content"
)

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestTemplateBuildE2B walks E2B's SDK's build: request, upload, trigger,
// poll with logs; then the template is listed, tagged and created from.
func TestTemplateBuildE2B(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) { testTemplateBuildE2B(t, dbURL) })
}

func testTemplateBuildE2B(t *testing.T, dbURL string) {
	e := newTmplEnvOn(t, dbURL)
	c := e.newBuild("web:v1")
	if c.TemplateID == "" || len(c.TemplateID) != 20 || !slices.Equal(c.Tags, []string{"v1"}) || !slices.Equal(c.Names, []string{"web"}) {
		t.Fatalf("v3 answer %+v", c)
	}
	files := []byte("a tar of the app")
	hash := sha256Hex(files)
	e.upload(c.TemplateID, hash, files)
	var link fileUploadJSON
	e.want(http.StatusCreated, "GET", "/templates/web/files/"+hash, nil, &link)
	if !link.Present || link.URL != "" {
		t.Fatalf("files after upload: %+v, want present", link)
	}
	body := map[string]any{
		"fromTemplate": "base",
		"steps": []map[string]any{
			{"type": "COPY", "args": []string{".", "/app"}, "filesHash": hash},
			{"type": "RUN", "args": []string{"echo hi", "root"}},
		},
		"startCmd": "python3 -m http.server", "readyCmd": "curl -fs localhost:8000",
	}
	e.want(http.StatusAccepted, "POST", "/v2/templates/"+c.TemplateID+"/builds/"+c.BuildID, body, nil)
	info, logs := e.waitBuild(c)
	if info.Status != "ready" || info.Reason != nil {
		t.Fatalf("build ended %+v", info)
	}
	var msgs []string
	for _, l := range logs {
		msgs = append(msgs, l.Step+" "+l.Message)
	}
	if want := []string{"base from base", "1 COPY . /app", "2 RUN echo hi"}; !slices.Equal(msgs, want) {
		t.Fatalf("log %q, want %q", msgs, want)
	}
	spec := e.agent.lastSpec()
	if spec.Stages[0].From.Template != "base" || spec.Stages[0].From.Manifest != "" ||
		spec.Stages[0].Steps[0].Files != content.FromBytes(files) || spec.StartCmd != "python3 -m http.server" {
		t.Fatalf("the agent got %+v", spec)
	}
	e.want(http.StatusConflict, "POST", "/v2/templates/"+c.TemplateID+"/builds/"+c.BuildID, body, nil)

	// Listed with its build, its digest and the hosts holding its tree.
	b, err := e.st.GetBuild(context.Background(), c.TemplateID, c.BuildID)
	if err != nil || b.SizeBytes == 0 || b.Manifest == "" {
		t.Fatalf("build record %+v, %v", b, err)
	}
	e.agent.mu.Lock()
	e.agent.trees = append(e.agent.trees, &hostagentv1.Template{Name: "m-" + content.Digest(b.Manifest).Hex()[:40], Digest: b.Manifest})
	e.agent.mu.Unlock()
	var v1 []v1TemplateJSON
	e.want(http.StatusOK, "GET", "/v1/templates", nil, &v1)
	if len(v1) != 2 || v1[0].Name != "web" || v1[0].Digest != b.Manifest || !slices.Equal(v1[0].Hosts, []string{"h1"}) ||
		!slices.Equal(v1[0].Tags, []string{"v1"}) || v1[0].Source != "e2b" || v1[1].Name != "base" {
		t.Fatalf("GET /v1/templates = %+v", v1)
	}
	var e2b []e2bTemplateJSON
	e.want(http.StatusOK, "GET", "/v2/templates", nil, &e2b)
	if len(e2b) != 2 || e2b[0].TemplateID != c.TemplateID || e2b[0].BuildStatus != "ready" || e2b[0].BuildCount != 1 || e2b[1].TemplateID != "base" {
		t.Fatalf("GET /v2/templates = %+v", e2b)
	}
	var withBuilds templateWithBuildsJSON
	e.want(http.StatusOK, "GET", "/templates/web", nil, &withBuilds)
	if withBuilds.TemplateID != c.TemplateID || len(withBuilds.Builds) != 1 || withBuilds.Builds[0].Status != "ready" {
		t.Fatalf("GET /templates/web = %+v", withBuilds)
	}

	// A create names it by name:tag or ID; a bare name means "default",
	// which this build does not have.
	for _, ref := range []string{"web:v1", c.TemplateID + ":v1"} {
		var sb sandboxJSON
		e.want(http.StatusCreated, "POST", "/sandboxes", map[string]any{"templateID": ref}, &sb)
		got := e.agent.lastCreate()
		if sb.TemplateID != c.TemplateID || sb.Alias != "web" || got.GetTemplateRef().GetDigest() != b.Manifest ||
			got.GetVcpus() != 1 || got.GetMemoryMb() != 256 {
			t.Fatalf("create %s: %+v; the agent got %v", ref, sb, got)
		}
		if _, err := content.DecodeManifestDigest(got.GetTemplateRef().GetManifest(), content.Digest(b.Manifest)); err != nil {
			t.Fatalf("create %s: manifest sent: %v", ref, err)
		}
	}
	if code, out := e.do("POST", "/sandboxes", e.key, map[string]any{"templateID": "web"}); code != http.StatusNotFound ||
		!strings.Contains(string(out), `no ready build tagged \"default\"`) {
		t.Fatalf("create of an untagged name: %d %s", code, out)
	}
	var host sandboxJSON
	e.want(http.StatusCreated, "POST", "/sandboxes", map[string]any{"templateID": "base"}, &host)
	if e.agent.lastCreate().GetTemplateRef() != nil || host.TemplateID != "base" {
		t.Fatalf("a host's tree was sent as content: %+v", host)
	}

	// Tags: point default at the build, then build on web.
	var assigned map[string]any
	e.want(http.StatusCreated, "POST", "/templates/tags", map[string]any{"target": "web:v1", "tags": []string{"default", "prod"}}, &assigned)
	if assigned["buildID"] != c.BuildID {
		t.Fatalf("assigned %v", assigned)
	}
	var tags []templateTagJSON
	e.want(http.StatusOK, "GET", "/templates/web/tags", nil, &tags)
	if len(tags) != 3 || tags[0].Tag != "default" || tags[2].Tag != "v1" {
		t.Fatalf("tags %+v", tags)
	}
	e.want(http.StatusNoContent, "DELETE", "/templates/tags", map[string]any{"name": "web", "tags": []string{"prod"}}, nil)
	e.want(http.StatusNotFound, "DELETE", "/templates/tags", map[string]any{"name": "web", "tags": []string{"prod"}}, nil)

	app := e.newBuild("app")
	e.want(http.StatusAccepted, "POST", "/v2/templates/app/builds/"+app.BuildID, map[string]any{"fromTemplate": "web"}, nil)
	if info, _ := e.waitBuild(app); info.Status != "ready" {
		t.Fatalf("app build %+v", info)
	}
	if got := e.agent.lastSpec().Stages[0].From; got.Template != "web" || string(got.Manifest) != b.Manifest {
		t.Fatalf("from web resolved to %+v, want its manifest %s", got, b.Manifest)
	}
	var sb sandboxJSON
	e.want(http.StatusCreated, "POST", "/sandboxes", map[string]any{"templateID": "app"}, &sb)
	if sb.Alias != "app" {
		t.Fatalf("create app: %+v", sb)
	}
}

// TestTemplateBuildFails checks a failed step's reason: message, step and
// that step's last log entries.
func TestTemplateBuildFails(t *testing.T) {
	e := newTmplEnv(t)
	c := e.newBuild("broken")
	e.want(http.StatusAccepted, "POST", "/v2/templates/broken/builds/"+c.BuildID,
		map[string]any{"fromTemplate": "base", "steps": []map[string]any{{"type": "RUN", "args": []string{"exit 2"}}}}, nil)
	info, _ := e.waitBuild(c)
	r := info.Reason
	if info.Status != "error" || r == nil || r.Step != "1" || !strings.Contains(r.Message, "exit code 2") || len(r.LogEntries) != 2 ||
		r.LogEntries[1].Message != "boom" || r.LogEntries[1].Level != "error" {
		t.Fatalf("failed build %+v (reason %+v)", info, r)
	}
	var logs struct{ Logs []store.BuildLogEntry }
	e.want(http.StatusOK, "GET", "/templates/broken/builds/"+c.BuildID+"/logs?direction=backward&limit=1", nil, &logs)
	if len(logs.Logs) != 1 || logs.Logs[0].Message != "boom" {
		t.Fatalf("last log entry %+v", logs.Logs)
	}
	e.want(http.StatusOK, "GET", "/templates/broken/builds/"+c.BuildID+"/logs?level=error", nil, &logs)
	if len(logs.Logs) != 1 {
		t.Fatalf("error entries %+v", logs.Logs)
	}
	if code, out := e.do("POST", "/sandboxes", e.key, map[string]any{"templateID": "broken"}); code != http.StatusNotFound {
		t.Fatalf("create from a failed template: %d %s", code, out)
	}

	// A result whose layer is not in the content store fails the build.
	c = e.newBuild("nolayer")
	e.want(http.StatusAccepted, "POST", "/v2/templates/nolayer/builds/"+c.BuildID, map[string]any{"fromTemplate": "base", "startCmd": "nolayer"}, nil)
	if info, _ := e.waitBuild(c); info.Status != "error" || info.Reason.Step != "finalize" || !strings.Contains(info.Reason.Message, "not in the content store") {
		t.Fatalf("build with a missing layer %+v", info)
	}
}

// TestTemplateBuildStopped checks that no build stays building: one the
// server stops is failed, and one whose lease ran out (its control plane
// died) is failed by another.
func TestTemplateBuildStopped(t *testing.T) {
	e := newTmplEnv(t)
	e.agent.hold = make(chan struct{})
	c := e.newBuild("slow")
	e.want(http.StatusAccepted, "POST", "/v2/templates/slow/builds/"+c.BuildID, map[string]any{"fromTemplate": "base"}, nil)
	code, out := e.do("POST", "/sandboxes", e.key, map[string]any{"templateID": "slow"})
	if code != http.StatusBadRequest || !strings.Contains(string(out), "is still building") {
		t.Fatalf("create while building: %d %s", code, out)
	}
	e.stop()
	ctx := context.Background()
	b, err := e.st.GetBuild(ctx, c.TemplateID, c.BuildID)
	if err != nil || b.Status != store.BuildError || !strings.Contains(b.Reason.Message, "stopped during the build") {
		t.Fatalf("build of a stopped server: %+v, %v", b, err)
	}

	// A build left building by a control plane that died.
	mustBuild := func(id string) {
		t.Helper()
		if err := e.st.CreateBuild(ctx, store.TemplateBuild{ID: id, TemplateID: c.TemplateID, Status: store.BuildWaiting}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.StartBuild(ctx, c.TemplateID, id, json.RawMessage(`{}`), "h1", time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	mustBuild("left")
	e.srv.tendBuilds(ctx)
	if b, _ := e.st.GetBuild(ctx, c.TemplateID, "left"); b.Status != store.BuildError || b.Reason.Message != reasonAbandoned.Message {
		t.Fatalf("abandoned build %+v", b)
	}
}

// TestTemplateDeleteCollectsBlobs checks a delete removes the template's
// rows, then the blobs only it named, keeping those of running sandboxes.
func TestTemplateDeleteCollectsBlobs(t *testing.T) {
	e := newTmplEnv(t)
	ready := func(name string, files []byte) (createTemplateJSON, content.Manifest, content.Digest) {
		c := e.newBuild(name)
		hash := sha256Hex(files)
		e.upload(c.TemplateID, hash, files)
		e.want(http.StatusAccepted, "POST", "/v2/templates/"+name+"/builds/"+c.BuildID, map[string]any{"fromTemplate": "base",
			"steps": []map[string]any{{"type": "COPY", "args": []string{".", "/"}, "filesHash": hash}}}, nil)
		if info, _ := e.waitBuild(c); info.Status != "ready" {
			t.Fatalf("build %s: %+v", name, info)
		}
		b, _ := e.st.GetBuild(context.Background(), c.TemplateID, c.BuildID)
		m, err := e.blobs.Manifest(content.Digest(b.Manifest))
		if err != nil {
			t.Fatal(err)
		}
		return c, m, content.Digest(b.Manifest)
	}
	one, m1, d1 := ready("one", []byte("files one"))
	_, m2, d2 := ready("two", []byte("files two"))
	e.want(http.StatusNoContent, "DELETE", "/templates/one", nil, nil)
	e.want(http.StatusNotFound, "GET", "/templates/"+one.TemplateID+"/builds/"+one.BuildID+"/status", nil, nil)
	for _, d := range []content.Digest{d1, m1.Layers[0].Digest, content.FromBytes([]byte("files one"))} {
		if e.blobs.Has(d) {
			t.Errorf("blob %s of the deleted template is kept", d)
		}
	}
	for _, d := range []content.Digest{d2, m2.Layers[0].Digest, content.FromBytes([]byte("files two"))} {
		if !e.blobs.Has(d) {
			t.Errorf("blob %s of the other template is gone", d)
		}
	}
	var sb sandboxJSON
	e.want(http.StatusCreated, "POST", "/sandboxes", map[string]any{"templateID": "two"}, &sb)
	e.want(http.StatusNoContent, "DELETE", "/templates/two", nil, nil)
	if !e.blobs.Has(d2) || !e.blobs.Has(m2.Layers[0].Digest) {
		t.Error("the blobs of a template a sandbox runs were deleted")
	}
	e.want(http.StatusNotFound, "DELETE", "/templates/two", nil, nil)
}

// TestTemplateSpecBuild is roost's own trigger: a build.Spec naming
// uploaded files by digest.
func TestTemplateSpecBuild(t *testing.T) {
	e := newTmplEnv(t)
	c := e.newBuild("spec")
	ctxTar := []byte("a build context")
	e.upload(c.TemplateID, sha256Hex(ctxTar), ctxTar)
	spec := build.Spec{Stages: []build.Stage{{From: build.From{Template: "base"}, Steps: []build.Step{
		{Type: build.StepCopy, Args: []string{"app", "/app"}, Files: content.FromBytes(ctxTar)},
		{Type: build.StepRun, Args: []string{"make"}, Line: 3},
	}}}}
	e.want(http.StatusAccepted, "POST", "/v1/templates/spec/builds/"+c.BuildID, spec, nil)
	if info, _ := e.waitBuild(c); info.Status != "ready" {
		t.Fatalf("spec build %+v", info)
	}
	b, _ := e.st.GetBuild(context.Background(), c.TemplateID, c.BuildID)
	var kept build.Spec
	if err := json.Unmarshal(b.Spec, &kept); err != nil || kept.Stages[0].Steps[1].Line != 3 {
		t.Fatalf("spec kept %s: %v", b.Spec, err)
	}
}

// TestTemplateRegistryPasswordNotKept checks the store keeps a spec
// without registry passwords, while the agent gets them.
func TestTemplateRegistryPasswordNotKept(t *testing.T) {
	e := newTmplEnv(t)
	c := e.newBuild("img")
	e.want(http.StatusAccepted, "POST", "/v2/templates/img/builds/"+c.BuildID, map[string]any{
		"fromImage": "registry.example/app:1", "fromImageRegistry": map[string]any{"type": "registry", "username": "u", "password": "hunter2"},
	}, nil)
	e.waitBuild(c)
	if got := e.agent.lastSpec().Stages[0].From.Registry; got == nil || got.Password != "hunter2" {
		t.Fatalf("the agent got registry %+v", got)
	}
	b, _ := e.st.GetBuild(context.Background(), c.TemplateID, c.BuildID)
	if strings.Contains(string(b.Spec), "hunter2") {
		t.Fatalf("the store keeps the password: %s", b.Spec)
	}
}
