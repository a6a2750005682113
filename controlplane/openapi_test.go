package controlplane

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"roost.dev/roost/store"
)

// openapiOps reads the operations of the document's paths section:
// "METHOD /path" → true. The document is written with two-space
// indentation, paths at depth 1 and methods at depth 2, which the test
// also holds it to.
func openapiOps(t *testing.T, doc []byte) map[string]bool {
	t.Helper()
	pathRe := regexp.MustCompile(`^  (/\S*):\s*$`)
	methodRe := regexp.MustCompile(`^    (get|put|post|delete|patch|head|options):\s*$`)
	ops := map[string]bool{}
	inPaths, cur := false, ""
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.Contains(line, "\t") {
			t.Fatalf("openapi.yaml:%d: a tab", n)
		}
		if line != "" && line[0] != ' ' && line[0] != '#' { // a top-level key
			inPaths = line == "paths:"
			cur = ""
			continue
		}
		if !inPaths {
			continue
		}
		if m := pathRe.FindStringSubmatch(line); m != nil {
			if seen := ops[" "+m[1]]; seen {
				t.Fatalf("openapi.yaml:%d: path %s twice", n, m[1])
			}
			ops[" "+m[1]], cur = true, m[1]
			continue
		}
		if m := methodRe.FindStringSubmatch(line); m != nil && cur != "" {
			ops[strings.ToUpper(m[1])+" "+cur] = true
		}
	}
	return ops
}

// registeredRoutes finds the patterns the package registers, in its
// source: api("…"), mux.Handle("…") and mux.HandleFunc("…") calls. Text,
// not reflection: http.ServeMux cannot list its patterns.
func registeredRoutes(t *testing.T) []string {
	t.Helper()
	re := regexp.MustCompile(`(?:\bapi|\badmin|\bmux\.Handle|\bmux\.HandleFunc)\(\s*"([^"]+)"`)
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			routes = append(routes, string(m[1]))
		}
	}
	return routes
}

// TestOpenAPIRoutes checks that the document describes every route the
// control plane registers, and that its references resolve.
func TestOpenAPIRoutes(t *testing.T) {
	ops := openapiOps(t, openapiDoc)
	routes := registeredRoutes(t)
	if len(routes) < 15 {
		t.Fatalf("found only %d routes in the source: %q", len(routes), routes)
	}
	for _, r := range routes {
		if r == "/" {
			continue // the catch-all 404
		}
		method, path, ok := strings.Cut(r, " ")
		if !ok {
			t.Errorf("route %q has no method: document it, or give it one", r)
			continue
		}
		path = strings.TrimSuffix(path, "{$}") // "/{$}" is exactly "/"
		if !ops[method+" "+path] {
			t.Errorf("route %q is not in openapi.yaml", r)
		}
	}

	// Every $ref names a component the document defines.
	defined := map[string]bool{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(openapiDoc))
	inComponents := false
	for sc.Scan() {
		line := sc.Text()
		if line != "" && line[0] != ' ' {
			inComponents = line == "components:"
			continue
		}
		if !inComponents {
			continue
		}
		if s, ok := strings.CutPrefix(line, "  "); ok && !strings.HasPrefix(s, " ") && strings.HasSuffix(s, ":") {
			section = strings.TrimSuffix(s, ":")
		} else if s, ok := strings.CutPrefix(line, "    "); ok && !strings.HasPrefix(s, " ") && strings.HasSuffix(s, ":") {
			defined["#/components/"+section+"/"+strings.TrimSuffix(s, ":")] = true
		}
	}
	refs := regexp.MustCompile(`\$ref:\s*'([^']+)'`).FindAllSubmatch(openapiDoc, -1)
	if len(refs) == 0 {
		t.Fatal("no $ref in openapi.yaml")
	}
	for _, m := range refs {
		if !defined[string(m[1])] {
			t.Errorf("$ref %s: no such component", m[1])
		}
	}
}

// TestOpenAPIServed checks GET /openapi.yaml needs no key and serves the
// embedded document.
func TestOpenAPIServed(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.Context(), "sqlite://"+filepath.Join(t.TempDir(), "roost.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := New(Config{}, st, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(method, "/openapi.yaml", nil))
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/yaml" {
			t.Fatalf("%s: status %d, content type %q", method, rec.Code, rec.Header().Get("Content-Type"))
		}
		if method == http.MethodGet && (len(openapiDoc) == 0 || !bytes.Equal(rec.Body.Bytes(), openapiDoc)) {
			t.Fatalf("served %d bytes, want the %d embedded", rec.Body.Len(), len(openapiDoc))
		}
	}
}
