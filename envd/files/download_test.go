package files

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDownload(t *testing.T) {
	e := newTestEnv(t)
	data := []byte(strings.Repeat("hello, roost\n", 1000))
	p := e.path("dir/notes.txt")
	writeFile(t, p, data, 0o644)
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}

	resp := e.get(t, p, nil)
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if !bytes.Equal(body, data) {
		t.Fatalf("body differs: %d bytes, want %d", len(body), len(data))
	}
	checks := map[string]string{
		"Content-Type":        "text/plain; charset=utf-8",
		"Content-Length":      strconv.Itoa(len(data)),
		"Last-Modified":       mtime.Format(http.TimeFormat),
		"Accept-Ranges":       "bytes",
		"Content-Disposition": `attachment; filename=notes.txt`,
		"Vary":                "Accept-Encoding",
		"Content-Encoding":    "",
	}
	for k, want := range checks {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func TestDownloadHeaders(t *testing.T) {
	e := newTestEnv(t)
	png := append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{0}, 100)...)
	cases := []struct {
		name, wantType, wantFilename string
		data                         []byte
	}{
		{"image", "image/png", "image", png},                         // sniffed
		{"data.json", "application/json", "data.json", []byte("{}")}, // by extension
		{"résumé final.txt", "text/plain; charset=utf-8", "résumé final.txt", []byte("x")},
		{"empty", "text/plain; charset=utf-8", "empty", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := e.path(c.name)
			writeFile(t, p, c.data, 0o644)
			resp := e.get(t, p, nil)
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, c.data) {
				t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
			}
			if got := resp.Header.Get("Content-Type"); got != c.wantType {
				t.Errorf("Content-Type %q, want %q", got, c.wantType)
			}
			_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition"))
			if err != nil || params["filename"] != c.wantFilename {
				t.Errorf("Content-Disposition %q (%v), want filename %q", resp.Header.Get("Content-Disposition"), err, c.wantFilename)
			}
			if c.data == nil && resp.Header.Get("Content-Length") != "0" {
				t.Errorf("empty file: Content-Length %q", resp.Header.Get("Content-Length"))
			}
		})
	}
}

func TestDownloadRange(t *testing.T) {
	e := newTestEnv(t)
	data := make([]byte, 10000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	p := e.path("blob.bin")
	writeFile(t, p, data, 0o644)

	cases := []struct {
		rng          string
		start, end   int // inclusive
		contentRange string
	}{
		{"bytes=0-99", 0, 99, "bytes 0-99/10000"},
		{"bytes=9990-", 9990, 9999, "bytes 9990-9999/10000"},
		{"bytes=-10", 9990, 9999, "bytes 9990-9999/10000"},
		{"bytes=5000-20000", 5000, 9999, "bytes 5000-9999/10000"},
	}
	for _, c := range cases {
		t.Run(c.rng, func(t *testing.T) {
			// A Range request is served plainly even when gzip is acceptable.
			resp := e.get(t, p, http.Header{"Range": {c.rng}, "Accept-Encoding": {"gzip"}})
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusPartialContent {
				t.Fatalf("status %d, want 206: %s", resp.StatusCode, body)
			}
			if got := resp.Header.Get("Content-Range"); got != c.contentRange {
				t.Errorf("Content-Range %q, want %q", got, c.contentRange)
			}
			if resp.Header.Get("Content-Encoding") != "" {
				t.Errorf("Content-Encoding %q on a range response", resp.Header.Get("Content-Encoding"))
			}
			if !bytes.Equal(body, data[c.start:c.end+1]) {
				t.Errorf("body is %d bytes, want bytes %d-%d", len(body), c.start, c.end)
			}
		})
	}

	t.Run("multiple ranges", func(t *testing.T) {
		resp := e.get(t, p, http.Header{"Range": {"bytes=0-9,100-109"}})
		body := readBody(t, resp)
		mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if resp.StatusCode != http.StatusPartialContent || mt != "multipart/byteranges" {
			t.Fatalf("status %d type %q", resp.StatusCode, mt)
		}
		if !bytes.Contains(body, data[100:110]) {
			t.Error("second range missing from body")
		}
	})

	t.Run("unsatisfiable", func(t *testing.T) {
		resp := e.get(t, p, http.Header{"Range": {"bytes=20000-30000"}})
		msg := wantError(t, resp, http.StatusRequestedRangeNotSatisfiable)
		if got := resp.Header.Get("Content-Range"); got != "bytes */10000" {
			t.Errorf("Content-Range %q, want bytes */10000", got)
		}
		if resp.Header.Get("Content-Disposition") != "" {
			t.Error("error response carries Content-Disposition")
		}
		t.Logf("416 message: %s", msg)
	})

	t.Run("not modified", func(t *testing.T) {
		fi, _ := os.Stat(p)
		resp := e.get(t, p, http.Header{"If-Modified-Since": {fi.ModTime().Add(time.Hour).UTC().Format(http.TimeFormat)}, "Accept-Encoding": {"gzip"}})
		if body := readBody(t, resp); resp.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Fatalf("status %d, %d bytes; want 304 and no body", resp.StatusCode, len(body))
		}
	})
}

func TestDownloadHead(t *testing.T) {
	e := newTestEnv(t)
	p := e.path("a.txt")
	writeFile(t, p, []byte("0123456789"), 0o644)

	resp := e.do(t, http.MethodHead, url.Values{"path": {p}}, nil, nil)
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Fatalf("status %d, %d body bytes", resp.StatusCode, len(body))
	}
	if resp.Header.Get("Content-Length") != "10" || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("headers %v", resp.Header)
	}

	resp = e.do(t, http.MethodHead, url.Values{"path": {p}}, http.Header{"Accept-Encoding": {"gzip"}}, nil)
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK || len(body) != 0 || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("gzip HEAD: status %d, %d body bytes, headers %v", resp.StatusCode, len(body), resp.Header)
	}

	resp = e.do(t, http.MethodHead, url.Values{"path": {e.path("missing")}}, nil, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("HEAD of a missing file: status %d", resp.StatusCode)
	}
}

func TestDownloadGzip(t *testing.T) {
	e := newTestEnv(t)
	data := []byte(strings.Repeat("compressible line of text\n", 50000))
	p := e.path("big.txt")
	writeFile(t, p, data, 0o644)

	for _, ae := range []string{"gzip", "deflate, gzip;q=0.5, br", "GZIP", "x-gzip", "*;q=1, identity;q=0"} {
		t.Run(ae, func(t *testing.T) {
			resp := e.get(t, p, http.Header{"Accept-Encoding": {ae}})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Content-Length") != "" {
				t.Fatalf("headers %v", resp.Header)
			}
			if resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || resp.Header.Get("Last-Modified") == "" || resp.Header.Get("Content-Disposition") == "" {
				t.Errorf("headers %v", resp.Header)
			}
			raw := readBody(t, resp)
			zr, err := gzip.NewReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(zr)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("decompressed %d bytes, want %d", len(got), len(data))
			}
			if len(raw) >= len(data)/10 {
				t.Errorf("compressed to %d of %d bytes", len(raw), len(data))
			}
		})
	}
	for _, ae := range []string{"gzip;q=0", "deflate", "identity", "*"} {
		t.Run(ae, func(t *testing.T) {
			resp := e.get(t, p, http.Header{"Accept-Encoding": {ae}})
			if body := readBody(t, resp); resp.Header.Get("Content-Encoding") != "" || !bytes.Equal(body, data) {
				t.Fatalf("Content-Encoding %q, %d bytes", resp.Header.Get("Content-Encoding"), len(body))
			}
		})
	}
	t.Run("incompressible data is sent as is", func(t *testing.T) {
		random := make([]byte, 256<<10)
		rand.Read(random)
		p := e.path("random.bin")
		writeFile(t, p, random, 0o644)
		resp := e.get(t, p, http.Header{"Accept-Encoding": {"gzip"}})
		if body := readBody(t, resp); resp.Header.Get("Content-Encoding") != "" || !bytes.Equal(body, random) {
			t.Fatalf("Content-Encoding %q, %d bytes", resp.Header.Get("Content-Encoding"), len(body))
		}
	})
	t.Run("sniffed type", func(t *testing.T) {
		p := e.path("noext")
		writeFile(t, p, []byte("<html><body>hi</body></html>"), 0o644)
		resp := e.get(t, p, http.Header{"Accept-Encoding": {"gzip"}})
		if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
	})
}

func TestAcceptsGzip(t *testing.T) {
	cases := map[string]bool{
		"":                       false,
		"gzip":                   true,
		"gzip, deflate, br":      true,
		"br;q=1.0, gzip;q=0.8":   true,
		"gzip;q=0":               false,
		"gzip; q=0.000":          false,
		"gzip;q=oops":            true,
		"deflate":                false,
		"*":                      false,
		"*;q=0.5, identity;q=0":  true,
		"*, gzip;q=0":            false,
		"identity;q=0":           false,
		" GZip ;Q=0.1":           true,
		"x-gzip":                 true,
		",,;;,":                  false,
		"gzip;level=9;q=1, zstd": true,
	}
	for header, want := range cases {
		if got := acceptsGzip([]string{header}); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	}
}

func TestDownloadErrors(t *testing.T) {
	e := newTestEnv(t)
	writeFile(t, e.path("file.txt"), []byte("x"), 0o644)
	fifo := e.path("fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		method string
		q      url.Values
		status int
		msg    string
	}{
		{"missing file", "GET", url.Values{"path": {e.path("nope.txt")}}, 404, "no such file"},
		{"missing parent", "GET", url.Values{"path": {e.path("no/such/dir/f")}}, 404, ""},
		{"directory", "GET", url.Values{"path": {e.dir}}, 400, "is a directory"},
		{"fifo", "GET", url.Values{"path": {fifo}}, 400, "not a regular file"},
		{"through a file", "GET", url.Values{"path": {e.path("file.txt/x")}}, 400, "not a directory"},
		{"no path", "GET", url.Values{}, 400, "missing path"},
		{"empty path", "GET", url.Values{"path": {""}}, 400, "missing path"},
		{"NUL in path", "GET", url.Values{"path": {"a\x00b"}}, 400, "NUL"},
		{"unknown user", "GET", url.Values{"path": {e.path("file.txt")}, "username": {"no-such-user-roost"}}, 400, "unknown user"},
		{"PUT", "PUT", url.Values{"path": {e.path("file.txt")}}, 405, "not allowed"},
		{"DELETE", "DELETE", url.Values{"path": {e.path("file.txt")}}, 405, "not allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := e.do(t, c.method, c.q, nil, nil)
			msg := wantError(t, resp, c.status)
			t.Logf("%d %s", c.status, msg)
			if !strings.Contains(msg, c.msg) {
				t.Errorf("message %q, want it to mention %q", msg, c.msg)
			}
			if c.status == 405 && resp.Header.Get("Allow") != "GET, HEAD, POST" {
				t.Errorf("Allow %q", resp.Header.Get("Allow"))
			}
		})
	}
}

func TestDownloadRelativeToHome(t *testing.T) {
	e := newTestEnv(t)
	sub := homeScratch(t, e)
	writeFile(t, filepath.Join(e.user.Home, sub, "rel.txt"), []byte("from home"), 0o644)
	for _, p := range []string{sub + "/rel.txt", "~/" + sub + "/rel.txt"} {
		resp := e.get(t, p, nil)
		if body := readBody(t, resp); resp.StatusCode != 200 || string(body) != "from home" {
			t.Fatalf("GET %q: status %d body %q", p, resp.StatusCode, body)
		}
	}
}

// homeScratch returns a fresh directory name under the user's home (which
// relative paths resolve against), removed when the test ends.
func homeScratch(t *testing.T, e *testEnv) string {
	t.Helper()
	dir, err := os.MkdirTemp(e.user.Home, "roost-files-test-")
	if err != nil {
		t.Skip("home not writable:", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Base(dir)
}

func TestDownloadPermissionDenied(t *testing.T) {
	if rerunUnprivileged(t) {
		return
	}
	e := newTestEnv(t)
	secret := e.path("secret.txt")
	writeFile(t, secret, []byte("s3cret"), 0o000)
	locked := e.path("locked")
	writeFile(t, filepath.Join(locked, "inner.txt"), []byte("x"), 0o644)
	if err := os.Chmod(locked, 0o000); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(locked, 0o755) })

	for _, p := range []string{secret, filepath.Join(locked, "inner.txt")} {
		msg := wantError(t, e.get(t, p, nil), http.StatusForbidden)
		if !strings.Contains(msg, "permission denied") {
			t.Errorf("message %q", msg)
		}
	}
}
