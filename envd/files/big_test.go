package files

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// patternReader produces n incompressible-looking bytes without holding
// them: a random 1 MiB block, each copy stamped with its index so no two
// blocks are equal. It costs little more than memmove, so it doesn't skew
// benchmarks or crawl under the race detector.
type patternReader struct {
	block []byte
	off   int64 // bytes produced so far
	n     int64 // total to produce
}

var patternBlock = sync.OnceValue(func() []byte {
	b := make([]byte, 1<<20)
	r := rand.NewChaCha8([32]byte{'r', 'o', 'o', 's', 't'})
	r.Read(b)
	return b
})

func newPattern(n int64) *patternReader {
	return &patternReader{block: patternBlock(), n: n}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if rem := p.n - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	total := 0
	for len(b) > 0 {
		i := p.off % int64(len(p.block))
		n := copy(b, p.block[i:])
		// Stamp the block index over the first 8 bytes of each block.
		if i < 8 {
			var stamp [8]byte
			binary.LittleEndian.PutUint64(stamp[:], uint64(p.off/int64(len(p.block))))
			copy(b[:min(n, 8-int(i))], stamp[i:])
		}
		b = b[n:]
		p.off += int64(n)
		total += n
	}
	return total, nil
}

// WriteTo hands out whole blocks, so an HTTP client sending a pattern
// body writes 1 MiB at a time rather than io.Copy's 32 KiB.
func (p *patternReader) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, len(p.block))
	var total int64
	for {
		n, err := p.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
	}
}

// genForm is a multipart body carrying n pattern bytes as one file,
// generated as it is read, without the goroutine and pipe of streamForm.
func genForm(n int64, filename string) (io.Reader, string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.CreateFormFile("file", filename)
	head := buf.String()
	buf.Reset()
	mw.Close()
	return io.MultiReader(strings.NewReader(head), newPattern(n), strings.NewReader(buf.String())), mw.FormDataContentType()
}

// sum is the sha256 of the first n pattern bytes.
func patternSum(t testing.TB, n int64) []byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, newPattern(n), make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	return h.Sum(nil)
}

// streamForm returns a reader of a multipart body carrying n pattern bytes
// as one file, produced as it is read.
func streamForm(n int64, filename string) (io.Reader, string) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		w, err := mw.CreateFormFile("file", filename)
		if err == nil {
			_, err = io.CopyBuffer(w, newPattern(n), make([]byte, 1<<20))
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr, mw.FormDataContentType()
}

func hashBody(t testing.TB, r io.Reader) ([]byte, int64) {
	t.Helper()
	h := sha256.New()
	n, err := copyBuf(h, r)
	if err != nil {
		t.Fatal(err)
	}
	return h.Sum(nil), n
}

// copyBuf copies with a 1 MiB buffer and no ReaderFrom/WriterTo detours
// (io.Discard and hashes would otherwise read 8 KiB at a time).
func copyBuf(dst io.Writer, src io.Reader) (int64, error) {
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, 1<<20))
}

func TestRoundTrip100MiB(t *testing.T) {
	const size = 100 << 20
	e := newTestEnv(t)
	want := patternSum(t, size)

	check := func(t *testing.T, path string) {
		t.Helper()
		resp := e.get(t, path, nil)
		if resp.StatusCode != 200 || resp.ContentLength != size {
			t.Fatalf("download: status %d length %d", resp.StatusCode, resp.ContentLength)
		}
		if got, n := hashBody(t, resp.Body); n != size || !bytes.Equal(got, want) {
			t.Fatalf("download: %d bytes, sha256 %x, want %d bytes %x", n, got, size, want)
		}
	}

	t.Run("multipart", func(t *testing.T) {
		dst := e.path("mp/big.bin")
		body, ct := streamForm(size, dst)
		wantEntries(t, e.do(t, http.MethodPost, nil, http.Header{"Content-Type": {ct}}, body))
		check(t, dst)
	})
	t.Run("octet-stream", func(t *testing.T) {
		dst := e.path("raw/big.bin")
		wantEntries(t, e.postOctet(t, url.Values{"path": {dst}}, nil, newPattern(size)))
		check(t, dst)
	})
	t.Run("gzip both ways", func(t *testing.T) {
		// Under the race detector flate crawls; a smaller file covers the same paths.
		size, want := int64(size), want
		if raceEnabled {
			size = 8 << 20
			want = patternSum(t, size)
		}
		dst := e.path("gz/big.bin")
		pr, pw := io.Pipe()
		go func() {
			zw, _ := gzip.NewWriterLevel(pw, gzip.BestSpeed)
			_, err := copyBuf(zw, newPattern(size))
			if err == nil {
				err = zw.Close()
			}
			pw.CloseWithError(err)
		}()
		wantEntries(t, e.postOctet(t, url.Values{"path": {dst}}, http.Header{"Content-Encoding": {"gzip"}}, pr))
		// The pattern does not compress, so envd sends it as is even
		// though gzip was offered (TestDownloadGzip covers compression).
		resp := e.get(t, dst, http.Header{"Accept-Encoding": {"gzip"}})
		body := io.Reader(resp.Body)
		if resp.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			body = zr
		}
		if got, n := hashBody(t, body); n != size || !bytes.Equal(got, want) {
			t.Fatalf("download: %d bytes, sha256 %x", n, got)
		}
	})
	t.Run("range tail", func(t *testing.T) {
		dst := e.path("raw/big.bin")
		resp := e.get(t, dst, http.Header{"Range": {"bytes=-1048576"}})
		got := readBody(t, resp)
		tail := newPattern(size)
		tail.off = size - 1<<20
		wantTail, _ := io.ReadAll(tail)
		if resp.StatusCode != 206 || !bytes.Equal(got, wantTail) {
			t.Fatalf("status %d, %d bytes", resp.StatusCode, len(got))
		}
	})
	noTemps(t, e.dir)
}

// TestUploadDoesNotBuffer uploads 256 MiB through a pipe, so neither side
// ever has the file in memory, and checks the heap stays far below its size.
func TestUploadDoesNotBuffer(t *testing.T) {
	const size = 256 << 20
	const limit = 64 << 20
	e := newTestEnv(t)

	for _, kind := range []string{"multipart", "octet-stream"} {
		t.Run(kind, func(t *testing.T) {
			dst := e.path(kind + ".bin")
			var body io.Reader
			hdr := http.Header{}
			if kind == "multipart" {
				var ct string
				body, ct = streamForm(size, dst)
				hdr.Set("Content-Type", ct)
			} else {
				pr, pw := io.Pipe()
				go func() {
					_, err := copyBuf(pw, newPattern(size))
					pw.CloseWithError(err)
				}()
				body = pr
				hdr.Set("Content-Type", "application/octet-stream")
			}

			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			base := ms.HeapInuse
			peak := base
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				tick := time.NewTicker(10 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						var ms runtime.MemStats
						runtime.ReadMemStats(&ms)
						peak = max(peak, ms.HeapInuse)
					}
				}
			}()
			q := url.Values{}
			if kind == "octet-stream" {
				q.Set("path", dst)
			}
			resp := e.do(t, http.MethodPost, q, hdr, body)
			entries := wantEntries(t, resp)
			close(stop)
			<-sampled

			if len(entries) != 1 {
				t.Fatalf("entries %+v", entries)
			}
			if fi, err := os.Stat(dst); err != nil || fi.Size() != size {
				t.Fatalf("uploaded file: %v %v", fi, err)
			}
			growth := int64(peak) - int64(base)
			t.Logf("heap in use: base %d MiB, peak %d MiB, growth %d MiB for a %d MiB upload",
				base>>20, peak>>20, growth>>20, size>>20)
			if growth > limit {
				t.Fatalf("heap grew by %d MiB during a %d MiB upload; want < %d MiB", growth>>20, size>>20, limit>>20)
			}
			os.Remove(dst)
		})
	}
}
