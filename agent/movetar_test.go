package agent

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"roost.dev/roost/errdefs"
)

// TestMoveStream writes a move's stream of a tree with a sparse file and
// reads it back: the record, the template, the files with their holes;
// and refuses streams that are cut short, leave their directory, or
// whose extents do not fit.
func TestMoveStream(t *testing.T) {
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "images"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "images", "core.img"), []byte("core"), 0o600); err != nil {
		t.Fatal(err)
	}
	disk, err := os.Create(filepath.Join(src, "layer-0.img"))
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	if err := disk.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := disk.WriteAt([]byte("start"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := disk.WriteAt([]byte("middle"), 32<<20); err != nil {
		t.Fatal(err)
	}
	disk.Close()
	rec := record{Version: recordVersion, ID: "sb1", Template: "base", State: StatePaused, Hibernated: true, Metadata: map[string]string{"k": "v"}}
	tpl := moveTemplate{Name: "base"}
	var stream bytes.Buffer
	if err := writeMove(&stream, rec, tpl, src); err != nil {
		t.Fatal(err)
	}
	if stream.Len() > 1<<20 {
		t.Errorf("stream of a 64 MiB sparse disk with 11 bytes in it: %d bytes", stream.Len())
	}
	whole := stream.Bytes()

	dst := t.TempDir()
	got, gotTpl, err := readMove(bytes.NewReader(whole), dst)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "sb1" || !got.Hibernated || got.Metadata["k"] != "v" || gotTpl.Name != "base" {
		t.Errorf("record %+v, template %+v", got, gotTpl)
	}
	b, err := os.ReadFile(filepath.Join(dst, moveExportDir, "layer-0.img"))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != size || string(b[:5]) != "start" || string(b[32<<20:32<<20+6]) != "middle" || b[1<<20] != 0 {
		t.Errorf("the disk came back as %d bytes, not as it was", len(b))
	}
	if b, err := os.ReadFile(filepath.Join(dst, moveExportDir, "images", "core.img")); err != nil || string(b) != "core" {
		t.Errorf("images/core.img: %q, %v", b, err)
	}

	refused := func(name string, stream []byte) {
		t.Helper()
		if _, _, err := readMove(bytes.NewReader(stream), t.TempDir()); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	refused("cut short", whole[:len(whole)/2])
	refused("without its end", withoutEnd(t, whole))
	refused("empty", nil)
	refused("a name outside", oneEntry(t, rec, &tar.Header{Name: "export/../../x", Typeflag: tar.TypeDir}, nil))
	refused("a link", oneEntry(t, rec, &tar.Header{Name: "export/l", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, nil))
	refused("an extent past the file", oneEntry(t, rec, &tar.Header{Name: "export/f", Typeflag: tar.TypeReg, Size: 4, Format: tar.FormatPAX,
		PAXRecords: map[string]string{paxSize: "4", paxExtents: "2:4"}}, []byte("abcd")))
	refused("extents short of the data", oneEntry(t, rec, &tar.Header{Name: "export/f", Typeflag: tar.TypeReg, Size: 4, Format: tar.FormatPAX,
		PAXRecords: map[string]string{paxSize: "8", paxExtents: "0:2"}}, []byte("abcd")))
	rec.Version = recordVersion + 1
	var other bytes.Buffer
	if err := writeMove(&other, rec, tpl, src); err != nil {
		t.Fatal(err)
	}
	refused("another record version", other.Bytes())
}

// withoutEnd is the stream whole without its end marker: a tar that ends
// well, at an entry's boundary.
func withoutEnd(t *testing.T, whole []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	tr := tar.NewReader(bytes.NewReader(whole))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Name == moveEndName {
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// oneEntry is a stream of rec, a template, the entry h with data, and the
// end marker.
func oneEntry(t *testing.T, rec record, h *tar.Header, data []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, e := range []struct {
		name string
		v    any
	}{{moveRecordName, rec}, {moveTemplateName, moveTemplate{Name: "base"}}} {
		if err := writeJSONEntry(tw, e.name, e.v); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.WriteHeader(&tar.Header{Name: moveEndName, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	return out.Bytes()
}
