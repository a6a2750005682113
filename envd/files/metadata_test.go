package files

import (
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"roost.dev/roost/envd/filesystem"
)

// wantMetadata checks the metadata an upload reported and what the file
// holds on disk.
func wantMetadata(t *testing.T, got entry, want map[string]string) {
	t.Helper()
	if !maps.Equal(got.Metadata, want) {
		t.Errorf("%s: response metadata %v, want %v", got.Path, got.Metadata, want)
	}
	if disk := filesystem.ReadMetadata(got.Path); !maps.Equal(disk, want) {
		t.Errorf("%s: metadata on disk %v, want %v", got.Path, disk, want)
	}
}

func requireUserXattrs(t *testing.T, dir string) {
	t.Helper()
	probe := dir + "/.xattr-probe"
	writeFile(t, probe, nil, 0o644)
	defer unix.Unlink(probe)
	if err := unix.Setxattr(probe, "user.e2b.probe", []byte("x"), 0); err != nil {
		t.Skipf("no user xattrs in %s: %v", dir, err)
	}
}

func TestUploadMetadata(t *testing.T) {
	e := newTestEnv(t)
	requireUserXattrs(t, e.dir)

	// Header names are case-insensitive; keys are stored lowercased, under
	// user.e2b., as E2B's envd stores them.
	dst := e.path("octet.txt")
	hdr := http.Header{"X-Metadata-Author": {"mish"}, "x-metadata-Purpose": {"an upload, with spaces & symbols ~!"}}
	got := wantEntries(t, e.postOctet(t, url.Values{"path": {dst}}, hdr, strings.NewReader("data")))
	want := map[string]string{"author": "mish", "purpose": "an upload, with spaces & symbols ~!"}
	wantMetadata(t, got[0], want)
	buf := make([]byte, 64)
	if n, err := unix.Getxattr(dst, "user.e2b.author", buf); err != nil || string(buf[:n]) != "mish" {
		t.Errorf("user.e2b.author = %q, %v", buf[:n], err)
	}

	// Every file of a multipart request gets the request's metadata.
	a, b := e.path("multi/a.txt"), e.path("b.txt")
	writeFile(t, b, []byte("existing"), 0o644)
	got = wantEntries(t, e.postFormWith(t, http.Header{"X-Metadata-Batch": {"7"}},
		formPart{filename: a, data: []byte("a")}, formPart{filename: b, data: []byte("b")}))
	for _, en := range got {
		wantMetadata(t, en, map[string]string{"batch": "7"})
	}

	// A header sent twice counts with its first value; an empty key is
	// ignored; a mixed-case key is lowercased.
	dst = e.path("odd.txt")
	hdr = http.Header{"X-Metadata-Dup": {"first", "second"}, "X-Metadata-": {"ignored"}, "X-Metadata-MixedCase": {"v"}}
	got = wantEntries(t, e.postOctet(t, url.Values{"path": {dst}}, hdr, strings.NewReader("data")))
	wantMetadata(t, got[0], map[string]string{"dup": "first", "mixedcase": "v"})

	// The longest key fits.
	long := strings.Repeat("k", filesystem.MaxMetadataKeyLen)
	got = wantEntries(t, e.postOctet(t, url.Values{"path": {dst}}, http.Header{"X-Metadata-" + long: {""}}, strings.NewReader("data")))
	wantMetadata(t, got[0], map[string]string{long: ""})

	// A device takes the data but keeps no metadata.
	got = wantEntries(t, e.postOctet(t, url.Values{"path": {"/dev/null"}}, http.Header{"X-Metadata-K": {"v"}}, strings.NewReader("data")))
	if got[0].Metadata != nil {
		t.Errorf("/dev/null: metadata %v", got[0].Metadata)
	}
	noTemps(t, e.dir)
}

// TestUploadMetadataReplaced: an upload replaces a file's metadata as a
// whole, as it replaces its content.
func TestUploadMetadataReplaced(t *testing.T) {
	e := newTestEnv(t)
	requireUserXattrs(t, e.dir)
	dst := e.path("f.txt")
	post := func(hdr http.Header) entry {
		t.Helper()
		return wantEntries(t, e.postOctet(t, url.Values{"path": {dst}}, hdr, strings.NewReader("x")))[0]
	}
	wantMetadata(t, post(http.Header{"X-Metadata-A": {"1"}, "X-Metadata-B": {"2"}}), map[string]string{"a": "1", "b": "2"})
	wantMetadata(t, post(http.Header{"X-Metadata-B": {"3"}}), map[string]string{"b": "3"})
	wantMetadata(t, post(nil), nil)
}

func TestUploadMetadataInvalid(t *testing.T) {
	e := newTestEnv(t)
	existing := e.path("existing.txt")
	writeFile(t, existing, []byte("keep me"), 0o644)
	big := http.Header{}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		big.Set("X-Metadata-"+k, strings.Repeat("v", 1000))
	}
	for _, c := range []struct {
		name string
		hdr  http.Header
		msg  string
	}{
		{"control byte in value", http.Header{"X-Metadata-K": {"a\tb"}}, "printable"},
		{"non-ASCII value", http.Header{"X-Metadata-K": {"caf\xe9"}}, "printable"},
		{"key too long", http.Header{"X-Metadata-" + strings.Repeat("k", filesystem.MaxMetadataKeyLen+1): {"v"}}, "longer than"},
		{"too much in all", big, "at most"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, dst := range []string{existing, e.path("fresh.txt")} {
				msg := wantError(t, e.postOctet(t, url.Values{"path": {dst}}, c.hdr.Clone(), strings.NewReader("new")), http.StatusBadRequest)
				if !strings.Contains(msg, c.msg) || !strings.Contains(msg, "X-Metadata-") {
					t.Errorf("message %q, want it to mention X-Metadata- and %q", msg, c.msg)
				}
				wantError(t, e.postFormWith(t, c.hdr, formPart{filename: dst, data: []byte("new")}), http.StatusBadRequest)
			}
			wantFile(t, existing, []byte("keep me"))
			wantMissing(t, e.path("fresh.txt"))
			noTemps(t, e.dir)
		})
	}
}
