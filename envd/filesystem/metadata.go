package filesystem

import (
	"errors"
	"fmt"
)

// metadataPrefix namespaces the user metadata E2B keeps in extended
// attributes and reports in EntryInfo.metadata: key k is stored as the
// attribute "user.e2b."+k. Keys are reported exactly as stored; writers
// through /files store them lowercased, as E2B's envd does.
const metadataPrefix = "user.e2b."

const (
	// MaxMetadataKeyLen is the longest metadata key, in bytes: Linux limits
	// a whole attribute name, prefix included, to 255 bytes.
	MaxMetadataKeyLen = 255 - len(metadataPrefix)
	// MaxMetadataLen bounds one file's metadata, in bytes of attribute
	// names (prefix included) plus values. ext4 keeps all of a file's
	// attributes in one 4 KiB block; E2B's envd uses the same bound.
	MaxMetadataLen = 4096
)

// TempFilePrefix starts the name of the temporary file that envd writes
// beside an existing destination and renames over it (package files, when an
// upload replaces a file). Watchers do not report names with this prefix:
// to a watcher, an upload looks like a write to the destination only.
const TempFilePrefix = ".roost-upload-"

// ValidateMetadata reports whether md can be stored by WriteMetadata: keys
// non-empty and at most MaxMetadataKeyLen bytes, keys and values printable
// US-ASCII (what the SDKs allow in the X-Metadata-* headers that carry
// them), and MaxMetadataLen in all.
func ValidateMetadata(md map[string]string) error {
	total := 0
	for k, v := range md {
		if k == "" {
			return errors.New("metadata key is empty")
		}
		if len(k) > MaxMetadataKeyLen {
			return fmt.Errorf("metadata key %.40q... is longer than %d bytes", k, MaxMetadataKeyLen)
		}
		if i := nonPrintable(k); i >= 0 {
			return fmt.Errorf("metadata key %q has a byte 0x%02x that is not printable US-ASCII", k, k[i])
		}
		if i := nonPrintable(v); i >= 0 {
			return fmt.Errorf("metadata value for key %q has a byte 0x%02x that is not printable US-ASCII", k, v[i])
		}
		total += len(metadataPrefix) + len(k) + len(v)
	}
	if total > MaxMetadataLen {
		return fmt.Errorf("metadata takes %d bytes; at most %d fit on one file", total, MaxMetadataLen)
	}
	return nil
}

// nonPrintable returns the index of the first byte of s outside 0x20-0x7e,
// or -1.
func nonPrintable(s string) int {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return i
		}
	}
	return -1
}
