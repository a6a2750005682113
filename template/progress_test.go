package template

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestDebootstrapProgress(t *testing.T) {
	// A real debootstrap log (package lines thinned out), written to the
	// line splitter in awkward chunks as a pipe would deliver it.
	data, err := os.ReadFile("testdata/debootstrap.log")
	if err != nil {
		t.Fatal(err)
	}
	p := newProgress("base")
	var shown, logged bytes.Buffer
	defer p.attach(&shown, "")()
	lw := &lineWriter{out: &logged, fn: p.debootstrapLine}
	for chunk := range slices7(data) {
		if _, err := lw.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(logged.Bytes(), data) {
		t.Error("the log did not get debootstrap's output verbatim")
	}
	want := strings.Join([]string{
		"[base 1/7] fetching the release index",
		"[base 2/7] resolving dependencies",
		"[base] debootstrap: W: an example warning",
		"[base 3/7] retrieving packages",
		"[base 4/7] extracting packages",
		"[base 5/7] installing packages",
	}, "\n") + "\n"
	if shown.String() != want {
		t.Errorf("progress:\n%s\nwant:\n%s", shown.String(), want)
	}
	p.enter(stageConfigure)
	p.enter(stageRetrieve) // never backwards
	if !strings.HasSuffix(shown.String(), "[base 6/7] adding the user and configuring\n") {
		t.Errorf("progress after enter: %q", shown.String())
	}
}

// slices7 yields b in 7-byte pieces.
func slices7(b []byte) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			n := min(7, len(b))
			if !yield(b[:n]) {
				return
			}
			b = b[n:]
		}
	}
}

func TestDebootstrapStage(t *testing.T) {
	cases := []struct {
		line string
		want int
	}{
		{"I: Retrieving InRelease ", stageRelease},
		{"I: Retrieving Release ", stageRelease},
		{"I: Retrieving Packages ", stageResolve},
		{"I: Found additional required dependencies: libfoo", stageResolve},
		{"I: Retrieving libc6 2.36-9+deb12u10", stageRetrieve},
		{"I: Validating libc6 2.36-9+deb12u10", stageRetrieve},
		{"I: Extracting libc6...", stageExtract},
		{"I: Unpacking the base system...", stageInstall},
		{"I: Configuring sudo...", stageInstall},
		{"I: Base system installed successfully.", stageInstall},
		{"W: Retrieving libc6", 0},
		{"dpkg: warning: something", 0},
		{"", 0},
	}
	for _, c := range cases {
		if got := debootstrapStage(c.line); got != c.want {
			t.Errorf("debootstrapStage(%q) = %d, want %d", c.line, got, c.want)
		}
	}
}
