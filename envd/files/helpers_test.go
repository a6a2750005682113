package files

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"roost.dev/roost/envd/auth"
	"roost.dev/roost/envd/defaults"
	"roost.dev/roost/envd/filesystem"
	"roost.dev/roost/envd/identity"
)

// testEnv is the /files handler behind the real guard on a loopback server,
// acting for the user the test runs as.
type testEnv struct {
	srv    *httptest.Server
	defs   *defaults.Set
	guard  *auth.Guard
	user   identity.User
	dir    string // a fresh directory for the test's files
	client *http.Client
}

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	u, err := identity.Current()
	if err != nil {
		t.Fatal(err)
	}
	defs := defaults.New(u.Name)
	guard := auth.NewGuard(defs)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := httptest.NewServer(guard.Wrap(New(guard, log)))
	t.Cleanup(srv.Close)
	tr := srv.Client().Transport.(*http.Transport).Clone()
	// Tests choose Accept-Encoding themselves; the transport must not add
	// gzip and decompress behind their back.
	tr.DisableCompression = true
	// Large writes, as any client streaming big files should use.
	tr.WriteBufferSize = 1 << 20
	client := &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	return &testEnv{srv: srv, defs: defs, guard: guard, user: u, dir: t.TempDir(), client: client}
}

func (e *testEnv) path(rel string) string { return filepath.Join(e.dir, rel) }

func (e *testEnv) setToken(tok string) { e.defs.Apply(defaults.Init{AccessToken: &tok}) }

func (e *testEnv) url(q url.Values) string {
	if len(q) == 0 {
		return e.srv.URL + "/files"
	}
	return e.srv.URL + "/files?" + q.Encode()
}

func (e *testEnv) do(t testing.TB, method string, q url.Values, hdr http.Header, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, e.url(q), body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, req.URL, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (e *testEnv) get(t testing.TB, path string, hdr http.Header) *http.Response {
	t.Helper()
	return e.do(t, http.MethodGet, url.Values{"path": {path}}, hdr, nil)
}

func (e *testEnv) postOctet(t testing.TB, q url.Values, hdr http.Header, body io.Reader) *http.Response {
	t.Helper()
	if hdr == nil {
		hdr = http.Header{}
	}
	if hdr.Get("Content-Type") == "" {
		hdr.Set("Content-Type", "application/octet-stream")
	}
	return e.do(t, http.MethodPost, q, hdr, body)
}

// formPart is one multipart part; field "" means "file".
type formPart struct {
	field    string
	filename string
	data     []byte
}

func buildForm(t testing.TB, parts ...formPart) (body []byte, contentType string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		field := p.field
		if field == "" {
			field = "file"
		}
		var w io.Writer
		var err error
		if p.filename == "" {
			w, err = mw.CreateFormField(field)
		} else {
			w, err = mw.CreateFormFile(field, p.filename)
		}
		if err != nil {
			t.Fatal(err)
		}
		w.Write(p.data)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), mw.FormDataContentType()
}

func (e *testEnv) postForm(t testing.TB, q url.Values, parts ...formPart) *http.Response {
	t.Helper()
	body, ct := buildForm(t, parts...)
	return e.do(t, http.MethodPost, q, http.Header{"Content-Type": {ct}}, bytes.NewReader(body))
}

// postFormWith is postForm with extra request headers.
func (e *testEnv) postFormWith(t testing.TB, hdr http.Header, parts ...formPart) *http.Response {
	t.Helper()
	body, ct := buildForm(t, parts...)
	hdr = hdr.Clone()
	hdr.Set("Content-Type", ct)
	return e.do(t, http.MethodPost, nil, hdr, bytes.NewReader(body))
}

func readBody(t testing.TB, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantError checks resp is a JSON error with status and returns its message.
func wantError(t testing.TB, resp *http.Response, status int) string {
	t.Helper()
	body := readBody(t, resp)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q, want application/json", ct)
	}
	var e auth.Error
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if e.Code != status || e.Message == "" {
		t.Fatalf("error body %+v, want code %d and a message", e, status)
	}
	return e.Message
}

func wantEntries(t testing.TB, resp *http.Response) []entry {
	t.Helper()
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var out []entry
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return out
}

func wantFile(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s holds %d bytes %.40q, want %d bytes %.40q", path, len(got), got, len(want), want)
	}
}

func wantMissing(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("%s exists (err %v), want it absent", path, err)
	}
}

// noTemps fails if an upload left a temporary file anywhere under dir.
func noTemps(t testing.TB, dir string) {
	t.Helper()
	if left := findTemps(dir); len(left) > 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
}

func findTemps(dir string) []string {
	var left []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), filesystem.TempFilePrefix) {
			left = append(left, p)
		}
		return nil
	})
	return left
}

func writeFile(t testing.TB, path string, data []byte, perm fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

// umask reads the process umask without changing it (Linux >= 4.7).
func umask(t testing.TB) fs.FileMode {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status:", err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			var m uint32
			for _, c := range strings.TrimSpace(v) {
				m = m*8 + uint32(c-'0')
			}
			return fs.FileMode(m)
		}
	}
	t.Skip("no Umask line in /proc/self/status")
	return 0
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

const unprivilegedEnv = "ROOST_FILES_TEST_UNPRIVILEGED"

// rerunUnprivileged makes a permission test mean something when the test
// binary runs as root, whom permission bits don't bind: it runs the calling
// test again in a copy of the binary as user nobody and reports true, in
// which case the caller returns. Unprivileged, it reports false and the
// caller runs its checks in-process.
func rerunUnprivileged(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		return false
	}
	if os.Getenv(unprivilegedEnv) != "" {
		t.Fatal("re-run test is still root")
	}
	nobody, err := identity.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody to drop to:", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "roost-files-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "files.test")
	src, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), unprivilegedEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody.UID, Gid: nobody.GID, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("re-run as nobody: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("re-run as nobody did not pass:\n%s", out)
	}
	t.Logf("re-ran as nobody:\n%s", out)
	return true
}
