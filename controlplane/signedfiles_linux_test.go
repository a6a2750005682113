package controlplane_test

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/wire"
)

// TestSignedFileURLWithoutRouting fetches signed /files URLs as E2B's SDK
// builds them with E2B_SANDBOX_URL set: on the control plane's own URL,
// without the sandbox headers. The signature alone must reach the sandbox
// it was made for, of two secure ones, for reading and for writing.
func TestSignedFileURLWithoutRouting(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	var sbs [2]created
	for i := range sbs {
		sbs[i] = e.create(t, map[string]any{"templateID": "base", "secure": true})
		if sbs[i].EnvdAccessToken == "" {
			t.Fatalf("secure sandbox %s has no envd access token", sbs[i].SandboxID)
		}
		e.do("POST", "/files?path=/home/user/who.txt", "", rawBody(sbs[i].SandboxID),
			wire.HeaderSandboxID, sbs[i].SandboxID, wire.HeaderSandboxPort, "49983", wire.HeaderAccessToken, sbs[i].EnvdAccessToken,
			"Content-Type", "application/octet-stream").want(t, http.StatusOK)
	}
	signed := func(sb created, path, op, exp string) string {
		q := url.Values{"path": {path}, "signature": {wire.FileSignature(path, op, "", sb.EnvdAccessToken, exp)}}
		if exp != "" {
			q.Set("signature_expiration", exp)
		}
		return "/files?" + q.Encode()
	}
	for _, sb := range sbs {
		if got := e.do("GET", signed(sb, "/home/user/who.txt", "read", ""), "", nil).want(t, http.StatusOK); string(got.body) != sb.SandboxID {
			t.Errorf("signed read of %s's file: %q", sb.SandboxID, got.body)
		}
	}
	second := sbs[1]
	e.do("POST", signed(second, "/home/user/up.txt", "write", ""), "", rawBody("uploaded"),
		"Content-Type", "application/octet-stream").want(t, http.StatusOK)
	if got := e.do("GET", signed(second, "/home/user/up.txt", "read", ""), "", nil).want(t, http.StatusOK); string(got.body) != "uploaded" {
		t.Errorf("signed write, then read: %q", got.body)
	}

	// A read signature does not write, and a signature of no sandbox is 401.
	readSig := signed(second, "/home/user/up.txt", "read", "")
	e.do("POST", readSig, "", rawBody("x"), "Content-Type", "application/octet-stream").want(t, http.StatusUnauthorized)
	forged := url.Values{"path": {"/home/user/who.txt"}, "signature": {wire.FileSignature("/home/user/who.txt", "read", "", "not-a-token", "")}}
	e.do("GET", "/files?"+forged.Encode(), "", nil).want(t, http.StatusUnauthorized)
	// An expired signature finds its sandbox, whose envd refuses it.
	past := strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10)
	e.do("GET", signed(second, "/home/user/who.txt", "read", past), "", nil).want(t, http.StatusUnauthorized)
	// Without a signature /files is no route of the API.
	e.do("GET", "/files?path=/home/user/who.txt", "", nil).want(t, http.StatusNotFound)
}
