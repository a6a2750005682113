package files

import (
	"bytes"
	"encoding/json"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"roost.dev/roost/envd/auth"
	"roost.dev/roost/envd/defaults"
	"roost.dev/roost/envd/identity"
)

// The fuzz targets run the handler in-process (no server) for speed. Inputs
// name files; "@DIR@" stands for the iteration's temporary directory. The
// handler may run as root, so an input whose files would land outside that
// directory is skipped before it is served, lest fuzzing write to /etc.

func fuzzHandler(f *testing.F) (http.Handler, identity.User) {
	u, err := identity.Current()
	if err != nil {
		f.Fatal(err)
	}
	guard := auth.NewGuard(defaults.New(u.Name))
	return guard.Wrap(New(guard, nil)), u
}

func inside(path, dir string) bool {
	return strings.HasPrefix(path, dir+string(filepath.Separator))
}

// formStaysInside reports whether every destination the handler could
// take from a multipart body lies inside dir. It reads the body as the
// handler does, up to the first malformed part, where the handler stops.
func formStaysInside(contentType string, body []byte, u identity.User, dir string) bool {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil || params["boundary"] == "" {
		return true // rejected before any part is read
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			return true
		}
		if p.FormName() != formField {
			continue
		}
		name := partFilename(p)
		if name == "" {
			return true
		}
		dst, err := u.Resolve(name)
		if err != nil {
			return true
		}
		if !inside(dst, dir) {
			return false
		}
	}
}

// checkResponse verifies the invariants every upload keeps: a JSON body, no
// server error, files that exist where the response says, and no temporary
// files left behind.
func checkResponse(t *testing.T, rec *httptest.ResponseRecorder, dir string) []entry {
	t.Helper()
	if rec.Code >= 500 || rec.Code < 200 || (rec.Code > 200 && rec.Code < 400) {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("status %d with Content-Type %q", rec.Code, ct)
	}
	if rec.Code != http.StatusOK {
		noTemps(t, dir)
		var e auth.Error
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != rec.Code || e.Message == "" {
			t.Fatalf("error body %q (%v) for status %d", rec.Body, err, rec.Code)
		}
		return nil
	}
	var entries []entry
	if err := json.Unmarshal(rec.Body.Bytes(), &entries); err != nil || len(entries) == 0 {
		t.Fatalf("success body %q: %v", rec.Body, err)
	}
	// A file the caller named like a temporary file is not one.
	for _, left := range findTemps(dir) {
		if !slices.ContainsFunc(entries, func(e entry) bool { return e.Path == left }) {
			t.Fatalf("temporary file left behind: %s", left)
		}
	}
	for _, e := range entries {
		if !inside(e.Path, dir) || e.Name != filepath.Base(e.Path) || e.Type != "file" {
			t.Fatalf("entry %+v", e)
		}
		if strings.ContainsRune(e.Path, utf8.RuneError) {
			continue // JSON cannot carry a name that is not UTF-8; it arrives mangled
		}
		if fi, err := os.Stat(e.Path); err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("written file %s: %v", e.Path, err)
		}
	}
	return entries
}

func FuzzUploadMultipart(f *testing.F) {
	h, u := fuzzHandler(f)

	form := func(parts ...formPart) []byte {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.SetBoundary("BOUNDARY")
		for _, p := range parts {
			field := p.field
			if field == "" {
				field = "file"
			}
			w, _ := mw.CreateFormFile(field, p.filename)
			w.Write(p.data)
		}
		mw.Close()
		return buf.Bytes()
	}
	one := form(formPart{filename: "@DIR@/a.txt", data: []byte("hello")})
	f.Add(one, "BOUNDARY", false)
	f.Add(one, "BOUNDARY", true)
	f.Add(form(formPart{filename: "@DIR@/a/b/c.txt", data: []byte("1")}, formPart{field: "x", filename: "@DIR@/x", data: []byte("2")}, formPart{filename: "@DIR@/d", data: nil}), "BOUNDARY", false)
	f.Add(form(formPart{filename: "@DIR@/same", data: []byte("1")}, formPart{filename: "@DIR@/same", data: []byte("2")}), "BOUNDARY", false)
	f.Add(form(formPart{filename: "@DIR@/f", data: []byte("1")}, formPart{filename: "@DIR@/f/g", data: []byte("2")}), "BOUNDARY", false)
	f.Add(one[:len(one)/2], "BOUNDARY", false)
	f.Add(one, "OTHER", false)
	f.Add([]byte("--B\nContent-Disposition: form-data; name=file; filename*=UTF-8''%40DIR%40%2Fu.txt\n\ndata\n--B--\n"), "B", false)
	f.Add([]byte("--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"@DIR@/.roost-upload-x\"\r\n\r\nx\r\n--B--"), "B", false)
	f.Add([]byte(""), "", false)
	f.Add([]byte("--\r\n"), "x y\"z", false)

	f.Fuzz(func(t *testing.T, body []byte, boundary string, withPath bool) {
		dir := t.TempDir()
		body = bytes.ReplaceAll(body, []byte("@DIR@"), []byte(dir))
		ct := mime.FormatMediaType("multipart/form-data", map[string]string{"boundary": boundary})
		if ct == "" {
			ct = "multipart/form-data; boundary=" + boundary
		}
		q := url.Values{}
		if withPath {
			q.Set("path", filepath.Join(dir, "target"))
		} else if !formStaysInside(ct, body, u, dir) {
			t.Skip("a destination lies outside the test directory")
		}
		req := httptest.NewRequest(http.MethodPost, "/files?"+q.Encode(), bytes.NewReader(body))
		req.Header.Set("Content-Type", ct)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		entries := checkResponse(t, rec, dir)
		if withPath && entries != nil && (len(entries) != 1 || entries[0].Path != q.Get("path")) {
			t.Fatalf("with a path query: entries %+v", entries)
		}
	})
}

func FuzzUploadPath(f *testing.F) {
	h, u := fuzzHandler(f)
	for _, p := range []string{
		"a.txt", "a/b/c.txt", "@DIR@/x", "@DIR@", "a/../b", "./a", "a//b", ".", "", "a/",
		"a\x00b", "~", "~/x", "with space", "ü/日本.txt", strings.Repeat("a", 300),
		strings.Repeat("d/", 2100), "a/.roost-upload-x", "..", "../x", "a\nb", `a"b\c`, "%2e%2e",
	} {
		f.Add(p, []byte("data"), false)
		f.Add(p, []byte("data"), true)
	}

	f.Fuzz(func(t *testing.T, path string, data []byte, asForm bool) {
		dir := t.TempDir()
		p := strings.ReplaceAll(path, "@DIR@", dir)
		if !strings.Contains(path, "@DIR@") {
			p = dir + "/" + path
		}
		dst, resolveErr := u.Resolve(p)
		if resolveErr == nil && !inside(dst, dir) {
			t.Skip("outside the test directory")
		}

		var req *http.Request
		if asForm {
			var buf bytes.Buffer
			mw := multipart.NewWriter(&buf)
			w, _ := mw.CreateFormFile("file", p)
			w.Write(data)
			mw.Close()
			if !formStaysInside(mw.FormDataContentType(), buf.Bytes(), u, dir) {
				t.Skip("the encoded filename lies outside the test directory")
			}
			req = httptest.NewRequest(http.MethodPost, "/files", &buf)
			req.Header.Set("Content-Type", mw.FormDataContentType())
		} else {
			req = httptest.NewRequest(http.MethodPost, "/files?"+url.Values{"path": {p}}.Encode(), bytes.NewReader(data))
			req.Header.Set("Content-Type", "application/octet-stream")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		entries := checkResponse(t, rec, dir)
		if entries == nil {
			if resolveErr != nil && rec.Code != http.StatusBadRequest {
				t.Fatalf("unresolvable path %q: status %d", p, rec.Code)
			}
			return
		}
		if !utf8.ValidString(p) {
			return // the response cannot name the file (see checkResponse)
		}
		if !asForm && (len(entries) != 1 || entries[0].Path != dst) {
			t.Fatalf("path %q resolves to %q; entries %+v", p, dst, entries)
		}
		if got, err := os.ReadFile(entries[0].Path); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("written file holds %q (%v), want %q", got, err, data)
		}

		// What was written reads back.
		req = httptest.NewRequest(http.MethodGet, "/files?"+url.Values{"path": {entries[0].Path}}.Encode(), nil)
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), data) {
			t.Fatalf("read back %s: status %d, %d bytes", entries[0].Path, rec.Code, rec.Body.Len())
		}
	})
}
