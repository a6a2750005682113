package controlplane

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
)

// lowerBase32 encodes with [a-z2-7], which is valid in sandbox IDs,
// hostnames and API keys alike.
var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// randomString returns n random bytes encoded with lowerBase32.
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return lowerBase32.EncodeToString(b)
}

// newSandboxID returns a sandbox ID with 80 random bits: 16 characters of
// [a-z2-7], usable as a hostname label ({port}-{id}.{domain}).
func newSandboxID() string { return randomString(10) }

// newToken returns an access token with 160 random bits.
func newToken() string { return randomString(20) }

// randomHex returns n random bytes in lowercase hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
