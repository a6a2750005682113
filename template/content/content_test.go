package content

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseDigest(t *testing.T) {
	good := FromBytes([]byte("x"))
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{string(good), true},
		{"", false},
		{good.Hex(), false},
		{"sha512:" + good.Hex(), false},
		{"sha256:" + strings.ToUpper(good.Hex()), false},
		{string(good)[:70], false},
		{string(good) + "0", false},
		{"sha256:../../../../etc/passwd", false},
	} {
		_, err := ParseDigest(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseDigest(%q) = %v, want ok %v", tc.in, err, tc.ok)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParseDigest(%q) = %v, want ErrInvalid", tc.in, err)
		}
	}
}

func TestManifestRoundTrip(t *testing.T) {
	m := Manifest{
		Layers: []Descriptor{{FromBytes([]byte("a")), 1}},
		Config: Config{User: "user", Env: map[string]string{"B": "2", "A": "1"}, StartCmd: "sleep 1"},
	}
	b, d := m.Encode()
	if !strings.HasPrefix(string(b), `{"schema":"roost.template.v1","layers":[`) {
		t.Fatalf("encoding = %s", b)
	}
	if !bytes.Contains(b, []byte(`"env":{"A":"1","B":"2"}`)) {
		t.Fatalf("env keys not sorted: %s", b)
	}
	got, err := DecodeManifestDigest(b, d)
	if err != nil {
		t.Fatal(err)
	}
	if b2, d2 := got.Encode(); d2 != d || !bytes.Equal(b2, b) {
		t.Fatalf("re-encoding differs: %s", b2)
	}
	if _, err := DecodeManifestDigest(b, FromBytes([]byte("other"))); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("wrong digest: %v", err)
	}
	for _, bad := range []string{
		`{"schema":"other","layers":[]}`,
		`{"schema":"roost.template.v1","layers":[{"digest":"sha256:zz","size":1}]}`,
		`{"schema":"roost.template.v1","layers":[{"digest":"` + string(d) + `","size":-1}]}`,
		`not json`,
	} {
		if _, err := DecodeManifest([]byte(bad)); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("DecodeManifest(%s) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestPutVerify(t *testing.T) {
	ctx := context.Background()
	b := NewBlobs(t.TempDir())
	data := randomBytes(t, 100_000)
	want := FromBytes(data)

	desc, err := b.Put(ctx, bytes.NewReader(data), "")
	if err != nil || desc.Digest != want || desc.Size != int64(len(data)) {
		t.Fatalf("Put = %v, %v", desc, err)
	}
	f, err := b.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("blob differs")
	}
	// Present: no-op, the reader is not read.
	if _, err := b.Put(ctx, iotestErrReader{}, want); err != nil {
		t.Fatalf("Put of a present blob: %v", err)
	}

	other := FromBytes([]byte("something else"))
	if _, err := b.Put(ctx, bytes.NewReader(data), other); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("mismatch: %v", err)
	}
	if b.Has(other) {
		t.Fatal("mismatched blob kept")
	}
	if tmp, _ := os.ReadDir(filepath.Join(b.Dir(), "tmp")); len(tmp) != 0 {
		t.Fatalf("temp files left: %v", tmp)
	}
	if _, err := b.Stat(other); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Stat of absent: %v", err)
	}
	if _, err := b.Open("sha256:../x"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Open of bad digest: %v", err)
	}

	md, err := b.PutManifest(ctx, Manifest{Layers: []Descriptor{desc}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.Manifest(md)
	if err != nil || len(m.Layers) != 1 || m.Layers[0] != desc {
		t.Fatalf("Manifest = %v, %v", m, err)
	}
	if _, err := b.Manifest(want); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("a layer read as a manifest: %v", err)
	}
	list, err := b.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %v, %v", list, err)
	}
	if err := b.Delete(want); err != nil || b.Has(want) {
		t.Fatalf("Delete: %v", err)
	}
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errors.New("read") }

func TestPutConcurrentSameDigest(t *testing.T) {
	b := NewBlobs(t.TempDir())
	data := randomBytes(t, 1<<20)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			_, err := b.Put(context.Background(), bytes.NewReader(data), FromBytes(data))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	f, err := b.Open(FromBytes(data))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, data) {
		t.Fatal("blob differs")
	}
	if tmp, _ := os.ReadDir(filepath.Join(b.Dir(), "tmp")); len(tmp) != 0 {
		t.Fatalf("temp files left: %v", tmp)
	}
}

// blobServer serves src's blobs; cut, when it returns true for a request,
// makes the server send half of what it would and drop the connection.
func blobServer(t *testing.T, src *Blobs, cut func(r *http.Request) bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := Digest(strings.TrimPrefix(r.URL.Path, "/blobs/"))
		if cut != nil && cut(r) {
			size, _ := src.Stat(d)
			w.Header().Set("Content-Length", "999999999")
			f, _ := src.Open(d)
			defer f.Close()
			_, _ = io.CopyN(w, f, size/2)
			w.(http.Flusher).Flush()
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		ServeBlob(w, r, src, d)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestFetchResumesAfterCut(t *testing.T) {
	ctx := context.Background()
	src := NewBlobs(t.TempDir())
	data := randomBytes(t, 3<<20)
	desc, _ := src.PutBytes(ctx, data)

	var ranges []string
	var mu sync.Mutex
	var requests atomic.Int32
	srv := blobServer(t, src, func(r *http.Request) bool {
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		return requests.Add(1) == 1
	})
	dst := NewBlobs(t.TempDir())
	var last int64
	err := dst.Fetch(ctx, desc, &HTTPSource{BaseURL: srv.URL + "/blobs"}, func(done, total int64) {
		if total != desc.Size || done < last {
			t.Errorf("progress %d/%d after %d", done, total, last)
		}
		last = done
	})
	if err != nil {
		t.Fatal(err)
	}
	if last != desc.Size {
		t.Fatalf("progress ended at %d", last)
	}
	if len(ranges) != 2 || ranges[0] != "" || !strings.HasPrefix(ranges[1], "bytes=") || ranges[1] == "bytes=0-" {
		t.Fatalf("requests' ranges = %q, want a whole then a resumed one", ranges)
	}
	checkBlob(t, dst, desc.Digest, data)
}

func TestFetchResumesPartialOfEarlierCall(t *testing.T) {
	ctx := context.Background()
	src := NewBlobs(t.TempDir())
	data := randomBytes(t, 1<<20)
	desc, _ := src.PutBytes(ctx, data)
	dst := NewBlobs(t.TempDir())
	// An earlier fetch stopped after 1000 bytes.
	if err := dst.mkdirs(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst.partialPath(desc.Digest), data[:1000], 0o644); err != nil {
		t.Fatal(err)
	}
	var gotRange string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotRange = r.Header.Get("Range")
		ServeBlob(w, r, src, desc.Digest)
	}))
	defer srv.Close()
	if err := dst.Fetch(ctx, desc, &HTTPSource{BaseURL: srv.URL}, nil); err != nil {
		t.Fatal(err)
	}
	if gotRange != "bytes=1000-" {
		t.Fatalf("Range = %q", gotRange)
	}
	checkBlob(t, dst, desc.Digest, data)
	if _, err := os.Stat(dst.partialPath(desc.Digest)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("partial left: %v", err)
	}
}

func TestFetchServerIgnoresRange(t *testing.T) {
	ctx := context.Background()
	data := randomBytes(t, 200_000)
	desc := Descriptor{FromBytes(data), int64(len(data))}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(data) // 200, whole blob, whatever the Range
	}))
	defer srv.Close()
	dst := NewBlobs(t.TempDir())
	_ = dst.mkdirs()
	_ = os.WriteFile(dst.partialPath(desc.Digest), data[:5000], 0o644)
	if err := dst.Fetch(ctx, desc, &HTTPSource{BaseURL: srv.URL}, nil); err != nil {
		t.Fatal(err)
	}
	checkBlob(t, dst, desc.Digest, data)
}

func TestFetchCorruptSource(t *testing.T) {
	ctx := context.Background()
	data := randomBytes(t, 100_000)
	desc := Descriptor{FromBytes(data), int64(len(data))}
	bad := bytes.Clone(data)
	bad[500] ^= 1
	for name, body := range map[string][]byte{"flipped": bad, "longer": append(bytes.Clone(data), 'x')} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body) }))
			defer srv.Close()
			dst := NewBlobs(t.TempDir())
			err := dst.Fetch(ctx, desc, &HTTPSource{BaseURL: srv.URL}, nil)
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("Fetch = %v, want ErrInvalid", err)
			}
			if dst.Has(desc.Digest) {
				t.Fatal("corrupt blob kept")
			}
			if _, err := os.Stat(dst.partialPath(desc.Digest)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("corrupt partial kept: %v", err)
			}
		})
	}
}

func TestFetchErrors(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer ok" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	dst := NewBlobs(t.TempDir())
	desc := Descriptor{FromBytes([]byte("x")), 1}
	if err := dst.Fetch(ctx, desc, &HTTPSource{BaseURL: srv.URL}, nil); !errors.Is(err, errdefs.ErrUnauthenticated) {
		t.Fatalf("no token: %v", err)
	}
	src := &HTTPSource{BaseURL: srv.URL, Header: http.Header{"Authorization": {"Bearer ok"}}}
	if err := dst.Fetch(ctx, desc, src, nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
}

func TestFetchConcurrentOnce(t *testing.T) {
	ctx := context.Background()
	src := NewBlobs(t.TempDir())
	data := randomBytes(t, 2<<20)
	desc, _ := src.PutBytes(ctx, data)
	var full atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") == "" {
			full.Add(1)
		}
		time.Sleep(20 * time.Millisecond)
		ServeBlob(w, r, src, desc.Digest)
	}))
	defer srv.Close()
	dst := NewBlobs(t.TempDir())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := dst.Fetch(ctx, desc, &HTTPSource{BaseURL: srv.URL}, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if full.Load() != 1 {
		t.Fatalf("%d downloads, want 1", full.Load())
	}
	checkBlob(t, dst, desc.Digest, data)
}

func TestServeAndReceive(t *testing.T) {
	ctx := context.Background()
	src := NewBlobs(t.TempDir())
	data := randomBytes(t, 10_000)
	desc, _ := src.PutBytes(ctx, data)
	dst := NewBlobs(t.TempDir())
	mux := http.NewServeMux()
	mux.HandleFunc("/blobs/{digest}", func(w http.ResponseWriter, r *http.Request) {
		d := Digest(r.PathValue("digest"))
		if r.Method == http.MethodPut {
			ReceiveBlob(w, r, dst, d, 20_000)
			return
		}
		ServeBlob(w, r, src, d)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := http.Head(srv.URL + "/blobs/" + string(desc.Digest))
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != desc.Size || resp.Header.Get("ETag") != `"`+string(desc.Digest)+`"` {
		t.Fatalf("HEAD = %v %v", resp, err)
	}
	resp, _ = http.Get(srv.URL + "/blobs/" + string(FromBytes([]byte("absent"))))
	if resp.StatusCode != 404 {
		t.Fatalf("absent = %d", resp.StatusCode)
	}
	resp, _ = http.Get(srv.URL + "/blobs/sha256:..")
	if resp.StatusCode != 400 {
		t.Fatalf("bad digest = %d", resp.StatusCode)
	}

	put := func(d Digest, body []byte) int {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+"/blobs/"+string(d), bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put(desc.Digest, data[:100]); code != 400 {
		t.Fatalf("PUT of wrong bytes = %d", code)
	}
	if code := put(desc.Digest, data); code != 201 {
		t.Fatalf("PUT = %d", code)
	}
	if code := put(desc.Digest, data); code != 200 {
		t.Fatalf("PUT again = %d", code)
	}
	big := randomBytes(t, 30_000)
	if code := put(FromBytes(big), big); code != 413 {
		t.Fatalf("PUT too large = %d", code)
	}
	checkBlob(t, dst, desc.Digest, data)
}

func TestEvictLRU(t *testing.T) {
	ctx := context.Background()
	b := NewBlobs(t.TempDir())
	var ds []Digest
	base := time.Now().Add(-time.Hour)
	for i := range 4 {
		desc, err := b.PutBytes(ctx, randomBytes(t, 1000))
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, desc.Digest)
		at := base.Add(time.Duration(i) * time.Minute)
		_ = os.Chtimes(b.Path(desc.Digest), at, at)
	}
	// Use the oldest: it becomes the newest.
	f, err := b.Open(ds[0])
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Keep ds[1], the oldest now.
	freed, err := b.Evict(2000, func(d Digest) bool { return d == ds[1] })
	if err != nil || freed != 2000 {
		t.Fatalf("Evict = %d, %v", freed, err)
	}
	for i, want := range []bool{true, true, false, false} {
		if b.Has(ds[i]) != want {
			t.Errorf("blob %d present %v, want %v", i, !want, want)
		}
	}
	if u, _ := b.Usage(); u != 2000 {
		t.Fatalf("Usage = %d", u)
	}
	// A partial download and a temp file left for two days go.
	old := time.Now().Add(-48 * time.Hour)
	for _, p := range []string{filepath.Join(b.Dir(), "partial", ds[0].Hex()), filepath.Join(b.Dir(), "tmp", "put-1")} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		_ = os.Chtimes(p, old, old)
	}
	if _, err := b.Evict(1<<40, nil); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"partial", "tmp"} {
		if left, _ := os.ReadDir(filepath.Join(b.Dir(), sub)); len(left) != 0 {
			t.Errorf("%s holds %v", sub, left)
		}
	}
	// Only kept blobs left over budget: not an error.
	if freed, err := b.Evict(0, func(Digest) bool { return true }); err != nil || freed != 0 {
		t.Fatalf("Evict of kept = %d, %v", freed, err)
	}
}

func checkBlob(t *testing.T, b *Blobs, d Digest, want []byte) {
	t.Helper()
	got, err := os.ReadFile(b.Path(d))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("blob %s differs", d)
	}
}
