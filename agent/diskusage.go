package agent

import (
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// DiskUsage is the bytes sandbox id holds on the host's disk: the blocks
// of the files in its state directory (its writable layer or disk image,
// its memory while hibernated, its console log), not counting what is
// mounted below it (its root filesystem, which is those same blocks seen
// through a mount). A file linked from elsewhere too (a namespace fork's
// layers, which it shares with the other forks of one capture) counts
// its share: its blocks over its links. 0 for an unknown sandbox; a file
// that goes while it is counted is skipped.
func (m *Manager) DiskUsage(id string) int64 {
	sb, err := m.lookup(id)
	if err != nil {
		return 0
	}
	return dirUsage(sb.dir)
}

// dirUsage sums the allocated blocks of the files under dir on dir's own
// filesystem.
func dirUsage(dir string) int64 {
	var root unix.Stat_t
	if err := unix.Lstat(dir, &root); err != nil {
		return 0
	}
	var total int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone meanwhile, or unreadable: not counted
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil {
			return nil
		}
		if st.Dev != root.Dev { // a mount point: its filesystem is another's
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		n := int64(1)
		if d.Type().IsRegular() && st.Nlink > 1 {
			n = int64(st.Nlink)
		}
		total += st.Blocks * 512 / n
		return nil
	})
	return total
}
