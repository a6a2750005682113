package agent_test

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/agent"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/template"
	"roost.dev/roost/template/content"
	"roost.dev/roost/template/templatetest"
)

// blobServer is a control plane's blob route on loopback: GET and HEAD
// of the blobs in its store, counting the GETs of each.
type blobServer struct {
	blobs *content.Blobs
	srv   *httptest.Server
	mu    sync.Mutex // guards gets
	gets  map[content.Digest]int
}

func newBlobServer(t testing.TB, blobs *content.Blobs) *blobServer {
	s := &blobServer{blobs: blobs, gets: map[content.Digest]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer heartbeat-token" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		d, err := content.ParseDigest(r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:])
		if err != nil {
			http.NotFound(w, r)
			return
		}
		if r.Method == http.MethodGet {
			s.mu.Lock()
			s.gets[d]++
			s.mu.Unlock()
		}
		content.ServeBlob(w, r, blobs, d)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *blobServer) source() content.Source {
	return &content.HTTPSource{BaseURL: s.srv.URL + "/v1/hosts/h1/blobs", Header: http.Header{"Authorization": {"Bearer heartbeat-token"}}}
}

func (s *blobServer) getsOf(d content.Digest) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[d]
}

// baseManifest puts base's tree into blobs as one layer, with a manifest
// whose config says so.
func baseManifest(t testing.TB, base template.Template, blobs *content.Blobs, cfg content.Config) (content.Manifest, content.Digest) {
	t.Helper()
	layer, err := templatetest.Store(t).LayerOfTree(t.Context(), base.Name, blobs)
	if err != nil {
		t.Fatal(err)
	}
	m := content.Manifest{Schema: content.ManifestSchema, Layers: []content.Descriptor{layer}, Config: cfg}
	d, err := blobs.PutManifest(t.Context(), m)
	if err != nil {
		t.Fatal(err)
	}
	return m, d
}

func TestCreatePullsTemplate(t *testing.T) {
	h := newHost(t)
	cp := newBlobServer(t, content.NewBlobs(t.TempDir()))
	man, d := baseManifest(t, h.base, cp.blobs, content.Config{
		User: h.base.DefaultUser, Workdir: h.base.Workdir, Env: map[string]string{"FROM_MANIFEST": "yes"}, Source: "test",
	})
	hostBlobs := content.NewBlobs(filepath.Join(h.dataDir, "blobs"))
	a := h.startWithConfig(template.NewStore(t.TempDir(), nil), func(c *agent.Config) {
		c.Blobs, c.BlobSource = hostBlobs, cp.source()
	})
	manifestBytes, _ := man.Encode()
	ref := &hostagentv1.TemplateRef{Digest: string(d), Manifest: manifestBytes}

	t.Run("two creates, one pull", func(t *testing.T) {
		// While the creates wait, ListTemplates says what the pull does.
		seen := make(chan string, 1)
		stop := make(chan struct{})
		go func() {
			defer close(seen)
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				ts, err := a.client.ListTemplates(ctxT(t), connect.NewRequest(&hostagentv1.ListTemplatesRequest{}))
				if err != nil {
					continue
				}
				for _, p := range ts.Msg.GetInProgress() {
					if p.GetDigest() == string(d) && p.GetName() == template.TreeName(d) && strings.HasPrefix(p.GetProgress(), "pulling ") {
						seen <- p.GetProgress()
						return
					}
				}
			}
		}()
		var wg sync.WaitGroup
		ids := make([]string, 2)
		errs := make([]error, 2)
		for i := range ids {
			wg.Go(func() {
				resp, err := a.client.CreateSandbox(ctxT(t), connect.NewRequest(&hostagentv1.CreateSandboxRequest{
					Template: "my-app:v1", TemplateRef: ref,
				}))
				errs[i] = err
				if err == nil {
					ids[i] = resp.Msg.GetSandbox().GetSandboxId()
				}
			})
		}
		wg.Wait()
		close(stop)
		if progress, ok := <-seen; ok {
			t.Logf("in progress while the creates waited: %s", progress)
		} else {
			t.Error("ListTemplates never showed the pull in progress")
		}
		for i, err := range errs {
			if err != nil {
				t.Fatalf("create %d: %v", i, err)
			}
		}
		if n := cp.getsOf(man.Layers[0].Digest); n != 1 {
			t.Errorf("layer fetched %d times, want once", n)
		}
		sb, err := a.m.Get(ids[0])
		if err != nil || sb.Template != "my-app:v1" {
			t.Fatalf("sandbox %v %v: want the template's name as the create gave it", sb, err)
		}
		if out := mustExec(t, sb.Envd.String(), "", `echo "$FROM_MANIFEST"; whoami; test -x /usr/bin/python3 && echo python`); out != "yes\n"+h.base.DefaultUser+"\npython\n" {
			t.Errorf("sandbox of the pulled template: %q", out)
		}
		users, err := agent.SandboxesUsing(h.dataDir, template.TreeName(d))
		if err != nil || len(users) != 2 {
			t.Errorf("sandboxes using the tree: %v %v, want both", users, err)
		}
		ts, err := a.client.ListTemplates(ctxT(t), connect.NewRequest(&hostagentv1.ListTemplatesRequest{}))
		if err != nil || len(ts.Msg.GetTemplates()) != 1 || ts.Msg.GetTemplates()[0].GetDigest() != string(d) {
			t.Errorf("host templates: %v %v, want the pulled tree with its digest", ts, err)
		}
	})

	t.Run("later creates find the tree", func(t *testing.T) {
		if _, err := a.m.Create(ctxT(t), agent.CreateRequest{Template: "my-app", TemplateRef: mustRef(t, string(d), manifestBytes)}); err != nil {
			t.Fatal(err)
		}
		if n := cp.getsOf(man.Layers[0].Digest); n != 1 {
			t.Errorf("layer fetched %d times, want once", n)
		}
	})

	t.Run("bad refs", func(t *testing.T) {
		other, _ := content.Manifest{Schema: content.ManifestSchema, Config: content.Config{Source: "other"}}.Encode()
		_, err := a.client.CreateSandbox(ctxT(t), connect.NewRequest(&hostagentv1.CreateSandboxRequest{
			TemplateRef: &hostagentv1.TemplateRef{Digest: string(d), Manifest: other},
		}))
		wantCode(t, "manifest that is not the digest's", err, connect.CodeInvalidArgument)
		missing := content.Manifest{Schema: content.ManifestSchema, Layers: []content.Descriptor{{Digest: content.FromBytes([]byte("nowhere")), Size: 7}}}
		b, md := missing.Encode()
		_, err = a.client.CreateSandbox(ctxT(t), connect.NewRequest(&hostagentv1.CreateSandboxRequest{
			TemplateRef: &hostagentv1.TemplateRef{Digest: string(md), Manifest: b},
		}))
		wantCode(t, "layer the control plane lacks", err, connect.CodeNotFound)
	})
}

func TestTemplateCacheEviction(t *testing.T) {
	h := newHost(t)
	cp := newBlobServer(t, content.NewBlobs(t.TempDir()))
	man, d := baseManifest(t, h.base, cp.blobs, content.Config{User: h.base.DefaultUser, Workdir: h.base.Workdir})
	hostBlobs := content.NewBlobs(filepath.Join(h.dataDir, "blobs"))
	store := template.NewStore(t.TempDir(), nil)
	a := h.startWithConfig(store, func(c *agent.Config) {
		c.Blobs, c.BlobSource, c.TemplateCache = hostBlobs, cp.source(), 1 // everything is over budget
	})
	ref := agent.TemplateRef{Digest: d, Manifest: man}
	if _, err := a.m.Create(ctxT(t), agent.CreateRequest{TemplateRef: &ref}); err != nil {
		t.Fatal(err)
	}
	// The pull's eviction runs as the pull ends; a second create of the
	// same template waits for nothing and proves the tree stayed.
	if _, err := a.m.Create(ctxT(t), agent.CreateRequest{TemplateRef: &ref}); err != nil {
		t.Fatal(err)
	}
	if hostBlobs.Has(man.Layers[0].Digest) {
		t.Errorf("layer kept over a budget of 1 byte")
	}
	if _, err := store.Get(template.TreeName(d)); err != nil {
		t.Errorf("tree in use evicted: %v", err)
	}
	for _, s := range a.m.List() {
		if err := a.m.Destroy(ctxT(t), s.ID); err != nil {
			t.Fatal(err)
		}
	}
	// A pull of another template evicts the tree nothing uses now.
	other, od := baseManifest(t, h.base, cp.blobs, content.Config{User: h.base.DefaultUser, Workdir: h.base.Workdir, Source: "other"})
	if _, err := a.m.Create(ctxT(t), agent.CreateRequest{TemplateRef: &agent.TemplateRef{Digest: od, Manifest: other}}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(template.TreeName(d)); err == nil {
		t.Errorf("unused tree kept over budget")
	}
}

func mustRef(t *testing.T, digest string, manifest []byte) *agent.TemplateRef {
	t.Helper()
	ref, err := agent.DecodeTemplateRef(digest, manifest)
	if err != nil {
		t.Fatal(err)
	}
	return &ref
}
