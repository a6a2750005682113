package template

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"roost.dev/roost/errdefs"
)

// applyAll applies layers in order to a fresh tree and returns it.
func applyAll(t *testing.T, layers ...[]byte) (string, error) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		if err := ApplyLayer(t.Context(), root, bytes.NewReader(l)); err != nil {
			return root, fmt.Errorf("layer %d: %w", i+1, err)
		}
	}
	return root, nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func TestApplyLayerWhiteouts(t *testing.T) {
	lower := mkTar(t, false,
		dir("a/", 0o755), file("a/keep", 0o644, "k"), file("a/gone", 0o644, "g"), dir("a/sub/", 0o755), file("a/sub/x", 0o644, "x"),
		dir("b/", 0o755), file("b/old", 0o644, "o"), dir("b/sub/", 0o700), file("b/sub/old2", 0o644, "o"),
		file("c", 0o644, "c"), dir("d/", 0o755), file("d/y", 0o644, "y"),
		dir("f/", 0o755), file("f/old", 0o644, "o"), symlink("g", "a"),
		dir("h/", 0o755), dir("h/sub/", 0o755), file("h/sub/old", 0o644, "o"),
	)
	upper := mkTar(t, false,
		file("a/.wh.gone", 0o644, ""), file("a/.wh.missing", 0o644, ""), file("a/.wh..wh.plnk", 0o644, ""),
		dir("b/", 0o750), file("b/new", 0o644, "n"), file("b/.wh..wh..opq", 0o644, ""), file("b/sub/new2", 0o644, "n2"),
		file(".wh.c", 0o644, ""), file(".wh.d", 0o644, ""),
		file("e", 0o644, "this layer's"), file(".wh.e", 0o644, ""),
		file("f", 0o644, "a file over a lower dir"),
		file("h/sub/new", 0o644, "n"), file("h/.wh..wh..opq", 0o644, ""), // opaque after a child's child
	)
	root, err := applyAll(t, lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"a/keep": true, "a/gone": false, "a/sub/x": true, "a/.wh..wh.plnk": false,
		"b/new": true, "b/old": false, "b/sub/old2": false, "b/sub/new2": true,
		"c": false, "d": false, "e": true, "f": true, "f/old": false,
		"h/sub/old": false, "h/sub/new": true,
	}
	for p, w := range want {
		if exists(filepath.Join(root, p)) != w {
			t.Errorf("%s present %v, want %v", p, !w, w)
		}
	}
	snap := snapshotDir(t, root)
	for p := range snap {
		if strings.Contains(p, ".wh.") {
			t.Errorf("whiteout %s in the tree", p)
		}
	}
	if st, _ := os.Stat(filepath.Join(root, "b")); st.Mode().Perm() != 0o750 {
		t.Errorf("b mode %v, want 0750", st.Mode().Perm())
	}
	if b, _ := os.ReadFile(filepath.Join(root, "f")); string(b) != "a file over a lower dir" {
		t.Errorf("f = %q", b)
	}
}

func TestApplyLayerRejects(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshotDir(t, outside)
	lowerLink := mkTar(t, false, symlink("evil", outside), symlink("abs", "/"))
	cases := []struct {
		name   string
		layers [][]byte
	}{
		{"dot-dot", [][]byte{mkTar(t, false, file("../x", 0o644, "x"))}},
		{"absolute", [][]byte{mkTar(t, false, file("/etc/x", 0o644, "x"))}},
		{"absolute symlink then a file through it", [][]byte{mkTar(t, false, symlink("abs", "/"), file("abs/etc/x", 0o644, "x"))}},
		{"file through a lower layer's symlink", [][]byte{lowerLink, mkTar(t, false, file("evil/pwned", 0o644, "x"))}},
		{"overwrite through a lower layer's symlink", [][]byte{lowerLink, mkTar(t, false, file("evil/secret", 0o644, "gone"))}},
		{"file through a lower absolute symlink", [][]byte{lowerLink, mkTar(t, false, file("abs/x", 0o644, "x"))}},
		{"hard link up", [][]byte{mkTar(t, false, hardlink("h", "../secret"))}},
		{"hard link to /etc/shadow", [][]byte{mkTar(t, false, hardlink("h", "/etc/shadow"))}},
		{"hard link through a lower symlink", [][]byte{lowerLink, mkTar(t, false, hardlink("h", "evil/secret"))}},
		{"whiteout through a lower symlink", [][]byte{lowerLink, mkTar(t, false, file("evil/.wh.secret", 0o644, ""))}},
		{"opaque through a lower symlink", [][]byte{lowerLink, mkTar(t, false, file("evil/.wh..wh..opq", 0o644, ""))}},
		{"whiteout of dot-dot", [][]byte{mkTar(t, false, file(".wh...", 0o644, ""))}},
		{"whiteout of nothing", [][]byte{mkTar(t, false, file(".wh.", 0o644, ""))}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := applyAll(t, c.layers...)
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("ApplyLayer = %v, want ErrInvalid", err)
			}
			t.Logf("rejected: %v", err)
			if after := snapshotDir(t, outside); !maps.Equal(before, after) {
				t.Errorf("outside dir changed: %v, was %v", after, before)
			}
			for _, p := range []string{"/etc/x", "/x", "/pwned"} {
				if exists(p) {
					t.Errorf("%s exists: written outside the tree", p)
				}
			}
		})
	}
}

// sparseClaim is a tar, by hand (archive/tar cannot write sparse files),
// of one PAX 1.0 sparse file named name claiming size bytes, of which
// five ("hello") are in the archive.
func sparseClaim(t testing.TB, name string, size int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	pax := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", name) + paxRecord("GNU.sparse.realsize", strconv.FormatInt(size, 10))
	buf.Write(ustarHeader(t, "PaxHeaders/"+name, 'x', int64(len(pax))))
	buf.Write(padBlock([]byte(pax)))
	data := padBlock([]byte("1\n0\n5\n")) // the sparse map: one run, 5 bytes at 0
	data = append(data, "hello"...)
	buf.Write(ustarHeader(t, "GNUSparseFile.0/"+name, '0', int64(len(data))))
	buf.Write(padBlock(data))
	buf.Write(make([]byte, 1024))
	return buf.Bytes()
}

func paxRecord(k, v string) string {
	rec := " " + k + "=" + v + "\n"
	n := len(rec)
	for n2 := len(strconv.Itoa(n)) + len(rec); n2 != n; n2 = len(strconv.Itoa(n)) + len(rec) {
		n = n2
	}
	return strconv.Itoa(n) + rec
}

func padBlock(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

func ustarHeader(t testing.TB, name string, typ byte, size int64) []byte {
	t.Helper()
	h := make([]byte, 512)
	copy(h[0:100], name)
	copy(h[100:108], "0000644\x00")
	copy(h[108:116], "0000000\x00")
	copy(h[116:124], "0000000\x00")
	copy(h[124:136], fmt.Sprintf("%011o\x00", size))
	copy(h[136:148], fmt.Sprintf("%011o\x00", epoch.Unix()))
	h[156] = typ
	copy(h[257:265], "ustar\x0000")
	copy(h[148:156], "        ")
	var sum int64
	for _, c := range h {
		sum += int64(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return h
}

func TestApplyLayerSparseClaim(t *testing.T) {
	small := sparseClaim(t, "small", 1<<20)
	tr := tar.NewReader(bytes.NewReader(small))
	if hdr, err := tr.Next(); err != nil || hdr.Size != 1<<20 || hdr.Name != "small" {
		t.Fatalf("hand-made sparse tar reads as %+v, %v", hdr, err)
	}
	root, err := applyAll(t, small)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "small")); len(b) != 1<<20 || string(b[:5]) != "hello" {
		t.Fatalf("small sparse file: %d bytes", len(b))
	}

	huge := sparseClaim(t, "huge", 10<<30)
	if len(huge) > 4096 {
		t.Fatalf("the claim takes %d bytes", len(huge))
	}
	root, err = applyAll(t, huge)
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "size budget") {
		t.Fatalf("a 10 GiB sparse claim = %v, want ErrInvalid over the size budget", err)
	}
	t.Logf("rejected: %v", err)
	if exists(filepath.Join(root, "huge")) {
		t.Error("the claimed file was created")
	}
}
