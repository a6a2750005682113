package content

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"roost.dev/roost/errdefs"
)

// Digest names a blob: "sha256:" and the 64 lowercase hex digits of the
// sha256 of its bytes.
type Digest string

const digestPrefix = "sha256:"

// ParseDigest checks s is a digest; it wraps errdefs.ErrInvalid otherwise.
func ParseDigest(s string) (Digest, error) {
	h, ok := strings.CutPrefix(s, digestPrefix)
	if !ok || len(h) != sha256.Size*2 || !isLowerHex(h) {
		return "", fmt.Errorf("digest %q: want sha256: and 64 lowercase hex digits: %w", s, errdefs.ErrInvalid)
	}
	return Digest(s), nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// FromBytes is the digest of b.
func FromBytes(b []byte) Digest {
	sum := sha256.Sum256(b)
	return Digest(digestPrefix + hex.EncodeToString(sum[:]))
}

// Hex is the digest's hex digits, without "sha256:".
func (d Digest) Hex() string { return strings.TrimPrefix(string(d), digestPrefix) }

// String is the digest as written.
func (d Digest) String() string { return string(d) }

// Short is the digest cut for messages: "sha256:" and 12 hex digits.
func (d Digest) Short() string {
	if len(d) > len(digestPrefix)+12 {
		return string(d[:len(digestPrefix)+12])
	}
	return string(d)
}

// Descriptor names a blob and its size in bytes.
type Descriptor struct {
	Digest Digest `json:"digest"`
	Size   int64  `json:"size"`
}
