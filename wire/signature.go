package wire

import (
	"crypto/sha256"
	"encoding/base64"
)

// FileSignature is the v1 signature of a signed /files URL of envd, as E2B's
// SDKs compute it from the sandbox's envd access token: operation is "read"
// or "write", username may be empty, and expiration is the URL's
// signature_expiration (unix seconds), empty for one that does not expire.
// envd checks it; the control plane's proxy uses it to find the sandbox of
// a signed URL that carries no other routing.
func FileSignature(path, operation, username, token, expiration string) string {
	raw := path + ":" + operation + ":" + username + ":" + token
	if expiration != "" {
		raw += ":" + expiration
	}
	sum := sha256.Sum256([]byte(raw))
	return "v1_" + base64.RawStdEncoding.EncodeToString(sum[:])
}
