package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
	"roost.dev/roost/template/build"
	"roost.dev/roost/template/content"
)

// buildAgent is an agent at the edge of the control plane's world: it
// answers the RPCs a template build and a create make, over real Connect
// on loopback, and "builds" by streaming a scripted log and putting a
// layer and a manifest into the shared content store, as an agent in
// roost up does. A RUN step whose command starts with "exit " fails the
// build at that step; a start command "nolayer" ends with a manifest
// whose layer was never stored.
type buildAgent struct {
	hostagentv1connect.UnimplementedHostAgentServiceHandler
	blobs *content.Blobs

	mu      sync.Mutex // guards the fields below
	specs   []build.Spec
	creates []*hostagentv1.CreateSandboxRequest
	trees   []*hostagentv1.Template
	making  []*hostagentv1.TemplateInProgress
	// hold, when set, keeps a build from ending until it is closed.
	hold chan struct{}
	// failWith, when set, fails every build with it as the reason.
	failWith string
}

func (a *buildAgent) GetHostInfo(context.Context, *connect.Request[hostagentv1.GetHostInfoRequest]) (*connect.Response[hostagentv1.GetHostInfoResponse], error) {
	return connect.NewResponse(&hostagentv1.GetHostInfoResponse{Host: &hostagentv1.HostInfo{
		Hostname: "fake", Runtime: "namespace", Capacity: &hostagentv1.Capacity{Cpus: 4, MemoryMb: 8192, MaxSandboxes: 10},
	}}), nil
}

func (a *buildAgent) ListTemplates(context.Context, *connect.Request[hostagentv1.ListTemplatesRequest]) (*connect.Response[hostagentv1.ListTemplatesResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return connect.NewResponse(&hostagentv1.ListTemplatesResponse{Templates: a.trees, InProgress: a.making}), nil
}

func (a *buildAgent) ListSandboxes(context.Context, *connect.Request[hostagentv1.ListSandboxesRequest]) (*connect.Response[hostagentv1.ListSandboxesResponse], error) {
	return connect.NewResponse(&hostagentv1.ListSandboxesResponse{}), nil
}

func (a *buildAgent) CreateSandbox(_ context.Context, req *connect.Request[hostagentv1.CreateSandboxRequest]) (*connect.Response[hostagentv1.CreateSandboxResponse], error) {
	a.mu.Lock()
	a.creates = append(a.creates, req.Msg)
	a.mu.Unlock()
	return connect.NewResponse(&hostagentv1.CreateSandboxResponse{Sandbox: &hostagentv1.Sandbox{
		SandboxId: req.Msg.GetSandboxId(), Template: req.Msg.GetTemplate(), State: hostagentv1.SandboxState_SANDBOX_STATE_RUNNING,
		Limits: &hostagentv1.Limits{Vcpus: max(req.Msg.GetVcpus(), 1), MemoryMb: max(req.Msg.GetMemoryMb(), 512), DiskMb: 2048},
	}}), nil
}

func (a *buildAgent) lastCreate() *hostagentv1.CreateSandboxRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.creates[len(a.creates)-1]
}

func (a *buildAgent) lastSpec() build.Spec {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.specs[len(a.specs)-1]
}

func logEvent(level hostagentv1.LogLevel, step, msg string) *hostagentv1.BuildTemplateResponse {
	return &hostagentv1.BuildTemplateResponse{Event: &hostagentv1.BuildTemplateResponse_Log{Log: &hostagentv1.BuildLogEntry{
		Time: timestamppb.Now(), Level: level, Step: step, Message: msg,
	}}}
}

func resultEvent(r *hostagentv1.BuildResult) *hostagentv1.BuildTemplateResponse {
	return &hostagentv1.BuildTemplateResponse{Event: &hostagentv1.BuildTemplateResponse_Result{Result: r}}
}

func (a *buildAgent) BuildTemplate(ctx context.Context, req *connect.Request[hostagentv1.BuildTemplateRequest], out *connect.ServerStream[hostagentv1.BuildTemplateResponse]) error {
	var spec build.Spec
	if err := json.Unmarshal([]byte(req.Msg.GetSpecJson()), &spec); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	a.mu.Lock()
	a.specs = append(a.specs, spec)
	hold, failWith := a.hold, a.failWith
	a.mu.Unlock()
	info := hostagentv1.LogLevel_LOG_LEVEL_INFO
	if err := out.Send(logEvent(info, "base", "from "+spec.Stages[0].From.Template)); err != nil {
		return err
	}
	for i, st := range spec.Stages[len(spec.Stages)-1].Steps {
		step := strconv.Itoa(i + 1)
		if err := out.Send(logEvent(info, step, st.String())); err != nil {
			return err
		}
		if st.Type == build.StepRun && strings.HasPrefix(st.Args[0], "exit ") {
			out.Send(logEvent(hostagentv1.LogLevel_LOG_LEVEL_ERROR, step, "boom"))
			return out.Send(resultEvent(&hostagentv1.BuildResult{
				Error: "step " + step + ": " + st.String() + ": exit code 2: boom", FailedStep: step, ExitCode: 2,
			}))
		}
	}
	if failWith != "" {
		return out.Send(resultEvent(&hostagentv1.BuildResult{Error: failWith, FailedStep: "1", ExitCode: 1}))
	}
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	layer := []byte("layer of build " + req.Msg.GetBuildId())
	desc := content.Descriptor{Digest: content.FromBytes(layer), Size: int64(len(layer))}
	if spec.StartCmd != "nolayer" {
		if _, err := a.blobs.PutBytes(ctx, layer); err != nil {
			return err
		}
	}
	m := content.Manifest{Schema: content.ManifestSchema, Layers: []content.Descriptor{desc},
		Config: content.Config{StartCmd: spec.StartCmd, ReadyCmd: spec.ReadyCmd, Source: "e2b"}}
	raw, d := m.Encode()
	if _, err := a.blobs.PutBytes(ctx, raw); err != nil {
		return err
	}
	return out.Send(resultEvent(&hostagentv1.BuildResult{Template: &hostagentv1.TemplateRef{Digest: string(d), Manifest: raw}}))
}

// tmplEnv is a control plane with a real SQLite store and content store,
// its in-process host a buildAgent.
type tmplEnv struct {
	t     *testing.T
	srv   *Server
	st    store.Store
	blobs *content.Blobs
	agent *buildAgent
	url   string
	key   string // team a's
	stop  func()
}

func newTmplEnv(t *testing.T) *tmplEnv {
	t.Helper()
	return newTmplEnvOn(t, storetest.SQLiteURL(t))
}

// newTmplEnvOn is newTmplEnv on the database dbURL names.
func newTmplEnvOn(t *testing.T, dbURL string) *tmplEnv {
	t.Helper()
	return newTmplEnvWith(t, dbURL, Config{})
}

// newTmplEnvWith is newTmplEnvOn with the control plane's cfg (its
// content store and local host are the env's).
func newTmplEnvWith(t *testing.T, dbURL string, cfg Config) *tmplEnv {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	st, err := store.Open(ctx, dbURL, log)
	if err != nil {
		t.Fatal(err)
	}
	blobs := content.NewBlobs(t.TempDir())
	agent := &buildAgent{blobs: blobs, trees: []*hostagentv1.Template{
		{Name: "base", Source: "debootstrap bookworm", SizeBytes: 100, Created: timestamppb.New(time.Unix(1, 0))},
	}}
	_, h := hostagentv1connect.NewHostAgentServiceHandler(agent)
	agentSrv := httptest.NewServer(h)
	cfg.Blobs, cfg.Local = blobs, &LocalAgent{HostID: "h1"}
	srv, err := New(cfg, st, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHost(ctx, store.Host{ID: "h1", URL: agentSrv.URL}, "token"); err != nil {
		t.Fatal(err)
	}
	key, err := srv.CreateTeamWithKey(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(srv.Handler())
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { srv.Run(runCtx); close(done) }()
	e := &tmplEnv{t: t, srv: srv, st: st, blobs: blobs, agent: agent, url: api.URL, key: key}
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			<-done
			api.Close()
			srv.Close()
			agentSrv.Close()
		})
	}
	t.Cleanup(func() { e.stop(); st.Close() })
	return e
}

// do calls the API with key; body is JSON unless it is []byte.
func (e *tmplEnv) do(method, path, key string, body any) (int, []byte) {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	u := path
	if !strings.HasPrefix(path, "http") {
		u = e.url + path
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// want calls the API and checks the status, decoding the answer into v.
func (e *tmplEnv) want(status int, method, path string, body, v any) {
	e.t.Helper()
	got, out := e.do(method, path, e.key, body)
	if got != status {
		e.t.Fatalf("%s %s: %d %s, want %d", method, path, got, out, status)
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", method, path, out, err)
		}
	}
}

// newBuild requests a build of name (POST /v3/templates).
func (e *tmplEnv) newBuild(name string, tags ...string) createTemplateJSON {
	e.t.Helper()
	var c createTemplateJSON
	e.want(http.StatusAccepted, "POST", "/v3/templates", map[string]any{"name": name, "tags": tags, "cpuCount": 1, "memoryMB": 256}, &c)
	return c
}

// waitBuild polls a build's status until it ends, collecting its log as
// E2B's SDK does (logsOffset the entries read so far).
func (e *tmplEnv) waitBuild(c createTemplateJSON) (buildInfoJSON, []store.BuildLogEntry) {
	e.t.Helper()
	var logs []store.BuildLogEntry
	deadline := time.Now().Add(10 * time.Second)
	for {
		var info buildInfoJSON
		e.want(http.StatusOK, "GET", "/templates/"+c.TemplateID+"/builds/"+c.BuildID+"/status?logsOffset="+strconv.Itoa(len(logs)), nil, &info)
		logs = append(logs, info.LogEntries...)
		if info.Status == "ready" || info.Status == "error" {
			return info, logs
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("build %s still %s", c.BuildID, info.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// upload puts data as the team's files of hash through the signed URL.
func (e *tmplEnv) upload(templateID, hash string, data []byte) {
	e.t.Helper()
	var link fileUploadJSON
	e.want(http.StatusCreated, "GET", "/templates/"+templateID+"/files/"+hash, nil, &link)
	if link.Present || link.URL == "" {
		e.t.Fatalf("files %s: %+v, want an upload URL", hash, link)
	}
	if got, out := e.do("PUT", link.URL, "", data); got != http.StatusCreated {
		e.t.Fatalf("upload: %d %s", got, out)
	}
}
