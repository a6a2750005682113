package filesystem

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestValidateMetadata(t *testing.T) {
	long := strings.Repeat("k", MaxMetadataKeyLen)
	for _, tc := range []struct {
		name string
		md   map[string]string
		ok   bool
	}{
		{"none", nil, true},
		{"plain", map[string]string{"author": "mish", "purpose": "upload"}, true},
		{"empty value", map[string]string{"k": ""}, true},
		{"every printable byte", map[string]string{"k!#$%&'*+-.^_`|~": " !\"#~}"}, true},
		{"longest key", map[string]string{long: "v"}, true},
		{"key too long", map[string]string{long + "k": "v"}, false},
		{"empty key", map[string]string{"": "v"}, false},
		{"control byte in key", map[string]string{"a\x00b": "v"}, false},
		{"tab in value", map[string]string{"k": "a\tb"}, false},
		{"DEL in value", map[string]string{"k": "\x7f"}, false},
		{"non-ASCII value", map[string]string{"k": "ü"}, false},
		{"just fits", map[string]string{"k": strings.Repeat("v", MaxMetadataLen-len(metadataPrefix)-1)}, true},
		{"too much", map[string]string{"k": strings.Repeat("v", MaxMetadataLen-len(metadataPrefix))}, false},
		{"too much in all", map[string]string{"a": strings.Repeat("v", 2100), "b": strings.Repeat("v", 2100)}, false},
	} {
		if err := ValidateMetadata(tc.md); (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestWriteMetadata: WriteMetadata replaces the user.e2b.* set and leaves
// other attributes alone; ReadMetadata and Stat read back what it wrote.
func TestWriteMetadata(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(e.dir, "f")
	writeFile(t, path, "x", 0o644)
	if err := unix.Setxattr(path, "user.e2b.stale", []byte("old"), 0); err != nil {
		t.Skipf("no user xattrs here: %v", err)
	}
	must(t, unix.Setxattr(path, "user.e2b.kept", []byte("old"), 0))
	must(t, unix.Setxattr(path, "user.other", []byte("untouched"), 0))

	write := func(md map[string]string) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		must(t, err)
		defer f.Close()
		must(t, WriteMetadata(f, md))
	}
	want := map[string]string{"kept": "new", "added": "v"}
	write(want)
	if got := ReadMetadata(path); !maps.Equal(got, want) {
		t.Errorf("metadata %v, want %v", got, want)
	}
	for _, c := range e.clients {
		if got := stat(t, c, path).GetMetadata(); !maps.Equal(got, want) {
			t.Errorf("%s: stat metadata %v, want %v", c.name, got, want)
		}
	}
	buf := make([]byte, 32)
	if n, err := unix.Getxattr(path, "user.other", buf); err != nil || string(buf[:n]) != "untouched" {
		t.Errorf("user.other = %q, %v", buf[:n], err)
	}

	write(nil)
	if got := ReadMetadata(path); got != nil {
		t.Errorf("metadata %v after clearing", got)
	}
}
