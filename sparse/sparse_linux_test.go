package sparse

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestExtents finds the data of a file with holes before, between and
// after it, and of an empty and a full file.
func TestExtents(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := Extents(f, 0); err != nil || len(got) != 0 {
		t.Errorf("empty: %v, %v", got, err)
	}
	const mib = 1 << 20
	if err := f.Truncate(64 * mib); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{8 * mib, 32 * mib} {
		if _, err := f.WriteAt(make([]byte, mib), off); err != nil { // zeros, but written: data
			t.Fatal(err)
		}
	}
	got, err := Extents(f, 64*mib)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Extent{{8 * mib, mib}, {32 * mib, mib}}; !reflect.DeepEqual(got, want) {
		t.Errorf("extents %v, want %v", got, want)
	}
	if got, err := Extents(f, 8*mib+4096); err != nil || !reflect.DeepEqual(got, []Extent{{8 * mib, 4096}}) {
		t.Errorf("the first 8 MiB and a page: %v, %v", got, err)
	}
}
