package files

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
)

const benchSize = 256 << 20

// BenchmarkDownload256MiB measures GET /files over loopback, client
// included, reading the body with a 1 MiB buffer.
func BenchmarkDownload256MiB(b *testing.B) {
	e := newTestEnv(b)
	src := e.path("bench.bin")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := copyBuf(f, newPattern(benchSize)); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}

	for _, enc := range []string{"identity", "gzip-offered"} {
		b.Run(enc, func(b *testing.B) {
			b.SetBytes(benchSize)
			for b.Loop() {
				resp := e.get(b, src, http.Header{"Accept-Encoding": {strings.TrimSuffix(enc, "-offered")}})
				// Gzip is offered, but this data does not compress, so envd
				// sends it as is: what a browser or the SDK downloading a
				// binary gets.
				var body io.Reader = resp.Body
				if resp.Header.Get("Content-Encoding") == "gzip" {
					zr, err := gzip.NewReader(resp.Body)
					if err != nil {
						b.Fatal(err)
					}
					body = zr
				}
				n, err := copyBuf(io.Discard, body)
				resp.Body.Close()
				if err != nil || n != benchSize {
					b.Fatalf("read %d bytes: %v", n, err)
				}
			}
		})
	}
}

// BenchmarkUpload256MiB measures POST /files over loopback, from a body
// generated on the fly to the file on disk (the page cache, mostly).
func BenchmarkUpload256MiB(b *testing.B) {
	e := newTestEnv(b)
	dst := e.path("bench.bin")
	for _, kind := range []string{"octet-stream", "multipart"} {
		b.Run(kind, func(b *testing.B) {
			b.SetBytes(benchSize)
			for b.Loop() {
				var resp *http.Response
				if kind == "multipart" {
					body, ct := genForm(benchSize, dst)
					resp = e.do(b, http.MethodPost, nil, http.Header{"Content-Type": {ct}}, body)
				} else {
					resp = e.postOctet(b, url.Values{"path": {dst}}, nil, newPattern(benchSize))
				}
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d: %s", resp.StatusCode, readBody(b, resp))
				}
				resp.Body.Close()
			}
		})
	}
}
