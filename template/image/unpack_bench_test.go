package image

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"roost.dev/roost/template"
	"roost.dev/roost/template/content"
	"roost.dev/roost/template/templatetest"
)

// unpackLayers is how many gzip layers the benchmark's image has.
const unpackLayers = 3

// BenchmarkUnpackImage imports an OCI layout of the base template (its
// tree split into three gzip layers, ~300 MB uncompressed) and
// materializes it (FromLayout + Store.Materialize) into a fresh store,
// alternating with `tar -xzf` of the same layer files, in order, into a
// fresh dir on the same disk; both end with a sync. MB/s is the layers'
// uncompressed bytes over the wall time (issue 13: at least half tar's).
func BenchmarkUnpackImage(b *testing.B) {
	base := templatetest.Base(b)
	work, err := os.MkdirTemp(filepath.Dir(templatetest.CacheDir()), "roost-bench-unpack-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(work) })
	lay, files, size := baseLayout(b, base, work)
	b.Logf("layout of %d layers, %.0f MB uncompressed", len(files), float64(size)/1e6)

	var roost, tarx time.Duration
	n := 0
	for b.Loop() {
		dir := filepath.Join(work, fmt.Sprintf("run%d", n))
		roost += timed(b, func() error { return importAndMaterialize(b.Context(), lay, dir) })
		os.RemoveAll(dir)
		tarx += timed(b, func() error { return untarAll(files, dir) })
		os.RemoveAll(dir)
		n++
	}
	mb := float64(size) * float64(n) / 1e6
	b.ReportMetric(mb/roost.Seconds(), "unpack-MB/s")
	b.ReportMetric(mb/tarx.Seconds(), "tar-MB/s")
}

// timed runs f, then sync, and returns the wall time of both.
func timed(b *testing.B, f func() error) time.Duration {
	b.Helper()
	t0 := time.Now()
	if err := f(); err != nil {
		b.Fatal(err)
	}
	unix.Sync()
	return time.Since(t0)
}

// importAndMaterialize is the path of an image into a template: its
// layers into fresh blobs, then the tree into a fresh store, below dir.
func importAndMaterialize(ctx context.Context, lay, dir string) error {
	blobs := content.NewBlobs(filepath.Join(dir, "blobs"))
	m, d, err := FromLayout(ctx, lay, blobs, nil)
	if err != nil {
		return err
	}
	store := template.NewStore(filepath.Join(dir, "templates"), slog.New(slog.DiscardHandler))
	_, err = store.Materialize(ctx, m, d, blobs)
	return err
}

// untarAll extracts the gzip tars files, in order, into dir.
func untarAll(files []string, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if out, err := exec.Command("tar", "-xzf", f, "-C", dir).CombinedOutput(); err != nil {
			return fmt.Errorf("tar -xzf %s: %v: %s", f, err, out)
		}
	}
	return nil
}

// baseLayout writes an OCI layout of base's tree, split into
// unpackLayers gzip layers, under work. It returns the layout's dir, its
// layer files in order and their uncompressed size.
func baseLayout(b *testing.B, base template.Template, work string) (string, []string, int64) {
	b.Helper()
	blobs := content.NewBlobs(filepath.Join(work, "src-blobs"))
	whole, err := templatetest.Store(b).LayerOfTree(b.Context(), base.Name, blobs)
	if err != nil {
		b.Fatal(err)
	}
	parts, size, err := splitLayer(blobs, whole, filepath.Join(work, "parts"))
	if err != nil {
		b.Fatal(err)
	}
	os.RemoveAll(blobs.Dir())
	layers := make([]v1.Layer, len(parts))
	for i, p := range parts {
		if layers[i], err = tarball.LayerFromFile(p); err != nil {
			b.Fatal(err)
		}
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		b.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		b.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{User: base.DefaultUser, WorkingDir: base.Workdir}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		b.Fatal(err)
	}
	lay := filepath.Join(work, "layout")
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}})
	if _, err := layout.Write(lay, idx); err != nil {
		b.Fatal(err)
	}
	os.RemoveAll(filepath.Join(work, "parts"))
	files := make([]string, len(layers))
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			b.Fatal(err)
		}
		files[i] = filepath.Join(lay, "blobs", d.Algorithm, d.Hex)
	}
	return lay, files, size
}

// splitLayer cuts the layer blob whole into unpackLayers tars of about
// equal size, each gzipped into dir. The entries keep their order, so
// every parent directory and hard link target is in the same or an
// earlier layer. It returns the files and their uncompressed size.
func splitLayer(blobs *content.Blobs, whole content.Descriptor, dir string) ([]string, int64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, 0, err
	}
	f, err := blobs.Open(whole.Digest)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	parts := make([]*layerPart, unpackLayers)
	for i := range parts {
		if parts[i], err = newLayerPart(filepath.Join(dir, fmt.Sprintf("layer%d.tar.gz", i))); err != nil {
			return nil, 0, err
		}
	}
	per, i, read := whole.Size/unpackLayers, 0, int64(0)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		if i < len(parts)-1 && read >= per*int64(i+1) {
			i++
		}
		if err := parts[i].tw.WriteHeader(hdr); err != nil {
			return nil, 0, fmt.Errorf("%s: %w", hdr.Name, err)
		}
		n, err := io.Copy(parts[i].tw, tr)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", hdr.Name, err)
		}
		read += n + 512
	}
	var files []string
	var size int64
	for _, p := range parts {
		if err := p.close(); err != nil {
			return nil, 0, err
		}
		files, size = append(files, p.path), size+p.raw.n
	}
	return files, size, nil
}

// layerPart is one layer being written: a tar, counted, through a gzip
// writer in a goroutine, into a file.
type layerPart struct {
	path string
	tw   *tar.Writer
	raw  *countWriter
	pw   *io.PipeWriter
	done chan error
}

func newLayerPart(path string) (*layerPart, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	p := &layerPart{path: path, raw: &countWriter{w: pw}, pw: pw, done: make(chan error, 1)}
	p.tw = tar.NewWriter(p.raw)
	go func() {
		zw := gzip.NewWriter(f)
		_, err := io.Copy(zw, pr)
		if err == nil {
			err = zw.Close()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		pr.CloseWithError(err)
		p.done <- err
	}()
	return p, nil
}

func (p *layerPart) close() error {
	err := p.tw.Close()
	p.pw.CloseWithError(err)
	if gerr := <-p.done; err == nil {
		err = gerr
	}
	return err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}
