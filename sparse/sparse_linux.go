package sparse

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Extent is a run of data in a file: Len bytes from offset Off.
type Extent struct{ Off, Len int64 }

// Extents lists the data of f's first size bytes, in order, with
// SEEK_DATA and SEEK_HOLE (on a filesystem that cannot tell its holes,
// the kernel reports all of it as data). It moves f's offset.
func Extents(f *os.File, size int64) ([]Extent, error) {
	var out []Extent
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) { // no data after off
			break
		}
		if err != nil {
			return nil, fmt.Errorf("seek data in %s: %w", f.Name(), err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("seek hole in %s: %w", f.Name(), err)
		}
		hole = min(hole, size)
		out = append(out, Extent{Off: data, Len: hole - data})
		off = hole
	}
	return out, nil
}
