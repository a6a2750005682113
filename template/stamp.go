package template

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Stamp identifies the state of the template tree rootfs, for caches of
// what is made from it (VM images, captures): it changes when the tree is
// made again (a rebuild writes a new tree and new metadata beside it), and
// not when Touch marks a use, which changes only the metadata's times.
// A tree outside a store is stamped by itself.
func Stamp(rootfs string) (string, error) {
	st, err := os.Stat(rootfs)
	if err != nil {
		return "", fmt.Errorf("template tree: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00", filepath.Clean(rootfs), st.ModTime().UnixNano())
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		fmt.Fprintf(h, "%d\x00", sys.Ino)
	}
	if meta, err := os.ReadFile(filepath.Join(filepath.Dir(rootfs), metaFile)); err == nil {
		h.Write(meta)
	}
	return hex.EncodeToString(h.Sum(nil)[:12]), nil
}
