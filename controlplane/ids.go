package controlplane

import (
	"crypto/rand"
	"encoding/base32"
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

// keyPrefix starts every API key, so leaked keys are easy to recognise.
const keyPrefix = "roost_"

// keyPrefixLen is how much of a key the store keeps in plaintext, for
// humans to tell keys apart: "roost_" and 6 random characters (30 bits,
// too few to matter to an attacker).
const keyPrefixLen = len(keyPrefix) + 6

// newAPIKey returns a new API key with 160 random bits and its displayable
// prefix.
func newAPIKey() (key, prefix string) {
	key = keyPrefix + randomString(20)
	return key, key[:keyPrefixLen]
}
