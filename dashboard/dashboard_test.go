package dashboard

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
)

var built = fstest.MapFS{
	"index.html":     {Data: []byte(`<!doctype html><script type="module" src="/ui/app-1.js"></script>`)},
	"app-1.js":       {Data: bytes.Repeat([]byte("console.log('roost');\n"), 100)},
	"app-1.css":      {Data: []byte("body{margin:0}")},
	"app-1.js.LEGAL": {Data: []byte("licences")},
	".gitignore":     {Data: []byte("*\n")},
	"nested/evil.js": {Data: []byte("x")},
}

func get(t *testing.T, h http.Handler, path string, header ...string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

// The page carries a policy that keeps it to its own origin and out of
// frames, and is revalidated; assets are cached for good.
func TestPageAndAssets(t *testing.T) {
	h := newHandler(built)
	page := get(t, h, "/")
	if page.StatusCode != http.StatusOK {
		t.Fatalf("GET /: %d", page.StatusCode)
	}
	csp := page.Header.Get("Content-Security-Policy")
	// httptest's requests are for example.com.
	for _, want := range []string{"script-src example.com/ui/;", "connect-src 'self'", "frame-ancestors 'none'", "default-src 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("policy %q lacks %q", csp, want)
		}
	}
	if page.Header.Get("X-Frame-Options") != "DENY" || page.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("page headers: %v", page.Header)
	}
	js := get(t, h, "/ui/app-1.js")
	if js.StatusCode != http.StatusOK || !strings.HasPrefix(js.Header.Get("Content-Type"), "text/javascript") ||
		!strings.Contains(js.Header.Get("Cache-Control"), "immutable") || js.Header.Get("Content-Encoding") != "" {
		t.Errorf("asset without gzip: %d %v", js.StatusCode, js.Header)
	}
	zipped := get(t, h, "/ui/app-1.js", "Accept-Encoding", "br, gzip;q=0.8")
	if zipped.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("asset not gzipped: %v", zipped.Header)
	}
	zr, err := gzip.NewReader(zipped.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(zr)
	if !bytes.Equal(body, built["app-1.js"].Data) {
		t.Errorf("gzipped asset decodes to %d bytes, want %d", len(body), len(built["app-1.js"].Data))
	}
}

// A Host that could end a directive is left out of the policy.
func TestPolicyHost(t *testing.T) {
	for host, want := range map[string]string{
		"127.0.0.1:3000":  "script-src 127.0.0.1:3000/ui/;",
		"[::1]:3000":      "script-src [::1]:3000/ui/;",
		"api.roost.test":  "script-src api.roost.test/ui/;",
		"a; script-src *": "script-src 'self';",
		"":                "script-src 'self';",
	} {
		if got := policy(host); !strings.Contains(got, want) {
			t.Errorf("policy(%q) = %q, want %q", host, got, want)
		}
	}
}

// Only the assets beside the page are served: not the page under its
// name, not hidden files, not paths into directories.
func TestUnknownPaths(t *testing.T) {
	h := newHandler(built)
	for _, p := range []string{"/ui/", "/ui/index.html", "/ui/.gitignore", "/ui/nested/evil.js", "/ui/missing.js", "/elsewhere"} {
		if got := get(t, h, p).StatusCode; got != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, got)
		}
	}
}

// A binary built without the dashboard says how to build it.
func TestNotBuilt(t *testing.T) {
	h := newHandler(fstest.MapFS{".gitignore": {Data: []byte("*\n")}})
	if h.Built() {
		t.Fatal("Built() with no index.html")
	}
	res := get(t, h, "/")
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "make build") {
		t.Fatalf("GET / unbuilt: %d %q", res.StatusCode, body)
	}
}
