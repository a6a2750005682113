package controlplane

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/store"
	"roost.dev/roost/template/content"
)

// TestTemplateAccess checks who may see and change a template: the
// owner; another team sees a public one but may not change it (403), and
// does not see a private one (404, 403 for the alias check as E2B).
func TestTemplateAccess(t *testing.T) {
	e := newTmplEnv(t)
	c := e.newBuild("web")
	other, err := e.srv.CreateTeamWithKey(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	as := func(key string, status int, method, path string, body any) {
		t.Helper()
		if got, out := e.do(method, path, key, body); got != status {
			t.Fatalf("%s %s as %s: %d %s, want %d", method, path, key[:8], got, out, status)
		}
	}
	as(other, http.StatusNotFound, "GET", "/templates/web", nil)
	as(other, http.StatusNotFound, "GET", "/templates/"+c.TemplateID+"/builds/"+c.BuildID+"/status", nil)
	as(other, http.StatusForbidden, "GET", "/templates/aliases/web", nil)
	as(other, http.StatusConflict, "POST", "/v3/templates", map[string]any{"name": "web"})
	as(e.key, http.StatusOK, "GET", "/templates/aliases/web", nil)

	var upd map[string][]string
	e.want(http.StatusOK, "PATCH", "/v2/templates/web", map[string]any{"public": true}, &upd)
	if upd["names"][0] != "web" {
		t.Fatalf("PATCH answer %v", upd)
	}
	as(other, http.StatusOK, "GET", "/templates/web", nil)
	as(other, http.StatusOK, "GET", "/templates/aliases/web", nil)
	as(other, http.StatusForbidden, "PATCH", "/templates/web", map[string]any{"public": false})
	as(other, http.StatusForbidden, "DELETE", "/templates/web", nil)
	as(other, http.StatusForbidden, "POST", "/v2/templates/web/builds/"+c.BuildID, map[string]any{"fromTemplate": "base"})
	as(other, http.StatusForbidden, "GET", "/templates/web/files/"+strings.Repeat("a", 64), nil)
	as(other, http.StatusForbidden, "POST", "/templates/tags", map[string]any{"target": "web", "tags": []string{"x"}})

	for _, path := range []string{"/templates/nope", "/templates/nope/tags", "/templates/aliases/nope",
		"/templates/web/builds/00000000-0000-4000-8000-000000000000/status", "/templates/nope/files/" + strings.Repeat("a", 64)} {
		as(e.key, http.StatusNotFound, "GET", path, nil)
	}
	as("", http.StatusUnauthorized, "POST", "/v3/templates", map[string]any{"name": "x"})
}

// TestTemplateBadInput checks bad requests are refused with a clear
// status, never a panic or a hang.
func TestTemplateBadInput(t *testing.T) {
	e := newTmplEnv(t)
	c := e.newBuild("web")
	trigger := "/v2/templates/web/builds/" + c.BuildID
	for _, tc := range []struct {
		name, method, path string
		body               any
		status             int
		msg                string
	}{
		{"no name", "POST", "/v3/templates", map[string]any{}, 400, "name is required"},
		{"bad name", "POST", "/v3/templates", map[string]any{"name": "a b"}, 400, "name or name:tag"},
		{"cache name", "POST", "/v3/templates", map[string]any{"name": "m-0123"}, 400, "reserved"},
		{"bad tag", "POST", "/v3/templates", map[string]any{"name": "x", "tags": []string{"a/b"}}, 400, "tag"},
		{"huge cpu", "POST", "/v3/templates", map[string]any{"name": "x", "cpuCount": 1 << 20}, 400, "cpuCount"},
		{"bad hash", "GET", "/templates/web/files/XYZ", nil, 400, "64 lowercase hex"},
		{"files never uploaded", "POST", trigger, map[string]any{"fromTemplate": "base",
			"steps": []map[string]any{{"type": "COPY", "args": []string{".", "/"}, "filesHash": strings.Repeat("b", 64)}}}, 400, "never uploaded"},
		{"unknown step", "POST", trigger, map[string]any{"fromTemplate": "base", "steps": []map[string]any{{"type": "FLY"}}}, 400, "unknown step"},
		{"no base", "POST", trigger, map[string]any{}, 400, "fromImage or fromTemplate"},
		{"not JSON", "POST", trigger, []byte("{"), 400, ""},
		{"spec files never uploaded", "POST", "/v1/templates/web/builds/" + c.BuildID, map[string]any{"stages": []map[string]any{{
			"from": map[string]any{"template": "base"}, "steps": []map[string]any{{"type": "COPY", "args": []string{".", "/"},
				"files": "sha256:" + strings.Repeat("c", 64)}}}}}, 400, "never uploaded"},
		{"spec with a manifest", "POST", "/v1/templates/web/builds/" + c.BuildID, map[string]any{"stages": []map[string]any{{
			"from": map[string]any{"template": "base", "manifest": "sha256:" + strings.Repeat("c", 64)}}}}, 400, "control plane's to set"},
		{"spec with a bad digest", "POST", "/v1/templates/web/builds/" + c.BuildID, map[string]any{"stages": []map[string]any{{
			"from": map[string]any{"template": "base"}, "steps": []map[string]any{{"type": "COPY", "args": []string{".", "/"}, "files": "sha256:XYZ"}}}}}, 400, ""},
		{"spec with an unknown field", "POST", "/v1/templates/web/builds/" + c.BuildID, map[string]any{"stagez": 1}, 400, "unknown field"},
		{"from a template still building", "POST", trigger, map[string]any{"fromTemplate": "web"}, 400, "still building"},
		{"unknown build", "POST", "/v2/templates/web/builds/nope", map[string]any{"fromTemplate": "base"}, 404, ""},
		{"bad logsOffset", "GET", "/templates/web/builds/" + c.BuildID + "/status?logsOffset=-1", nil, 400, ""},
		{"bad limit", "GET", "/templates/web/builds/" + c.BuildID + "/status?limit=101", nil, 400, ""},
		{"bad level", "GET", "/templates/web/builds/" + c.BuildID + "/status?level=loud", nil, 400, "level"},
		{"bad direction", "GET", "/templates/web/builds/" + c.BuildID + "/logs?direction=up", nil, 400, "direction"},
		{"bad cursor", "GET", "/templates/web/builds/" + c.BuildID + "/logs?cursor=x", nil, 400, "cursor"},
		{"no tags", "POST", "/templates/tags", map[string]any{"target": "web", "tags": []string{}}, 400, "at least one"},
		{"tag of no build", "POST", "/templates/tags", map[string]any{"target": "web:none", "tags": []string{"x"}}, 404, ""},
		{"bad create template", "POST", "/sandboxes", map[string]any{"templateID": "a:b:c"}, 400, "name:tag"},
		{"unknown tag", "POST", "/sandboxes", map[string]any{"templateID": "nope:v1"}, 404, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, out := e.do(tc.method, tc.path, e.key, tc.body)
			if got != tc.status || !strings.Contains(string(out), tc.msg) {
				t.Fatalf("%s %s: %d %s, want %d with %q", tc.method, tc.path, got, out, tc.status, tc.msg)
			}
		})
	}
	if b, _ := e.st.GetBuild(context.Background(), c.TemplateID, c.BuildID); b.Status != store.BuildWaiting {
		t.Fatalf("refused triggers started the build: %s", b.Status)
	}
}

// TestTemplateUploadURL checks the signed upload URL: its token, expiry
// and size bound.
func TestTemplateUploadURL(t *testing.T) {
	e := newTmplEnv(t)
	c := e.newBuild("web")
	hash := strings.Repeat("d", 64)
	var link fileUploadJSON
	e.want(http.StatusCreated, "GET", "/templates/web/files/"+hash, nil, &link)
	u, err := url.Parse(link.URL)
	if err != nil || u.Path != "/templates/"+c.TemplateID+"/files/"+hash {
		t.Fatalf("upload URL %q: %v", link.URL, err)
	}
	put := func(q url.Values, body []byte) (int, string) {
		t.Helper()
		v := *u
		v.RawQuery = q.Encode()
		got, out := e.do("PUT", v.String(), "", body)
		return got, string(out)
	}
	q := u.Query()
	wrong := url.Values{"expires": q["expires"], "token": {"AAAA" + q.Get("token")[4:]}}
	if got, out := put(wrong, []byte("x")); got != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d %s", got, out)
	}
	if got, out := put(url.Values{"expires": q["expires"]}, []byte("x")); got != http.StatusUnauthorized {
		t.Fatalf("no token: %d %s", got, out)
	}
	past := time.Now().Add(-time.Minute).Unix()
	expired := url.Values{"expires": {strconv.FormatInt(past, 10)}, "token": {e.srv.filesSignature(c.TemplateID, hash, past)}}
	if got, out := put(expired, []byte("x")); got != http.StatusForbidden || !strings.Contains(out, "expired") {
		t.Fatalf("expired URL: %d %s", got, out)
	}
	// A URL is for one hash and one template.
	other := *u
	other.Path = "/templates/" + c.TemplateID + "/files/" + strings.Repeat("e", 64)
	if got, _ := e.do("PUT", other.String(), "", []byte("x")); got != http.StatusUnauthorized {
		t.Fatalf("URL reused for another hash: %d", got)
	}
	e.srv.blobLimit = 8
	if got, out := put(q, []byte("nine bytes")); got != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized upload: %d %s", got, out)
	}
	if got, out := put(q, []byte("eight b")); got != http.StatusCreated {
		t.Fatalf("upload: %d %s", got, out)
	}
	e.want(http.StatusCreated, "GET", "/templates/web/files/"+hash, nil, &link)
	if !link.Present {
		t.Fatalf("files after their upload: %+v", link)
	}
}

// TestHostBlobs checks the agents' blob routes: the host's token, Range,
// verification and the size bound.
func TestHostBlobs(t *testing.T) {
	e := newTmplEnv(t)
	ctx := context.Background()
	if err := e.st.UpsertHost(ctx, store.Host{ID: "h2", URL: "https://h2:1", TokenHash: store.HashKey("secret"), State: store.HostReady}); err != nil {
		t.Fatal(err)
	}
	data := []byte("a layer of a template")
	d, err := e.blobs.PutBytes(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, token string, body []byte, hdr ...string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, e.url+path, bytes.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	path := "/v1/hosts/h2/blobs/" + string(d.Digest)
	if got, out := call("GET", path, "secret", nil); got != http.StatusOK || !bytes.Equal(out, data) {
		t.Fatalf("GET blob: %d %q", got, out)
	}
	if got, out := call("GET", path, "secret", nil, "Range", "bytes=2-"); got != http.StatusPartialContent || !bytes.Equal(out, data[2:]) {
		t.Fatalf("GET range: %d %q", got, out)
	}
	if got, _ := call("HEAD", path, "secret", nil); got != http.StatusOK {
		t.Fatalf("HEAD: %d", got)
	}
	for _, tc := range []struct {
		method, path, token string
		body                []byte
		status              int
	}{
		{"GET", path, "wrong", nil, 401},
		{"GET", path, "", nil, 401},
		{"GET", "/v1/hosts/nope/blobs/" + string(d.Digest), "secret", nil, 401},
		{"GET", "/v1/hosts/h2/blobs/sha256:XYZ", "secret", nil, 400},
		{"GET", "/v1/hosts/h2/blobs/" + string(content.FromBytes([]byte("absent"))), "secret", nil, 404},
		{"PUT", "/v1/hosts/h2/blobs/" + string(content.FromBytes([]byte("new"))), "secret", []byte("new"), 201},
		{"PUT", "/v1/hosts/h2/blobs/" + string(content.FromBytes([]byte("new"))), "secret", []byte("new"), 200},
		{"PUT", "/v1/hosts/h2/blobs/" + string(content.FromBytes([]byte("this"))), "secret", []byte("that"), 400},
		{"PUT", "/v1/hosts/h2/blobs/" + string(content.FromBytes([]byte("new"))), "wrong", []byte("new"), 401},
	} {
		if got, out := call(tc.method, tc.path, tc.token, tc.body); got != tc.status {
			t.Errorf("%s %s (token %q): %d %s, want %d", tc.method, tc.path, tc.token, got, out, tc.status)
		}
	}
	if e.blobs.Has(content.FromBytes([]byte("that"))) || e.blobs.Has(content.FromBytes([]byte("this"))) {
		t.Error("a blob that failed verification was kept")
	}
	e.srv.blobLimit = 4
	big := []byte("more than four")
	if got, _ := call("PUT", "/v1/hosts/h2/blobs/"+string(content.FromBytes(big)), "secret", big); got != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized blob: %d", got)
	}
}
