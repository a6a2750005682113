package auth

import (
	"net/http"
	"testing"
	"time"

	"roost.dev/roost/envd/defaults"
	"roost.dev/roost/wire"
)

func TestBasicUser(t *testing.T) {
	for header, want := range map[string]string{
		"Basic dXNlcjo=":     "user", // user:
		"basic cm9vdDo=":     "root", // scheme is case-insensitive
		"Basic cm9vdA==":     "root", // no colon
		"Basic Og==":         "",     // ":" names nobody
		"Basic !!!":          "",
		"Bearer dXNlcjo=":    "",
		"":                   "",
		"Basic":              "",
		"Basic dXNlcjpwdw==": "user", // a password is ignored
	} {
		h := http.Header{}
		if header != "" {
			h.Set("Authorization", header)
		}
		got, ok := BasicUser(h)
		if got != want || ok != (want != "") {
			t.Errorf("BasicUser(%q) = %q, %v; want %q", header, got, ok, want)
		}
	}
}

func TestSignature(t *testing.T) {
	d := defaults.New("root")
	tok := "t0k"
	d.Apply(defaults.Init{AccessToken: &tok})
	g := NewGuard(d)
	now := time.Unix(1_700_000_000, 0)
	g.now = func() time.Time { return now }

	sig := wire.FileSignature("/a", "read", "user", tok, "")
	if why := g.signatureRefusal(sig, "/a", "read", "user", "", tok); why != "" {
		t.Errorf("valid signature refused: %s", why)
	}
	for name, why := range map[string]string{
		"other path": g.signatureRefusal(sig, "/b", "read", "user", "", tok),
		"other op":   g.signatureRefusal(sig, "/a", "write", "user", "", tok),
		"other user": g.signatureRefusal(sig, "/a", "read", "root", "", tok),
		"no prefix":  g.signatureRefusal(sig[3:], "/a", "read", "user", "", tok),
		"empty":      g.signatureRefusal("", "/a", "read", "user", "", tok),
	} {
		if why != refusedToken {
			t.Errorf("%s: %q, want %q", name, why, refusedToken)
		}
	}
	future, past := "1700000100", "1699999900"
	if why := g.signatureRefusal(wire.FileSignature("/a", "read", "", tok, future), "/a", "read", "", future, tok); why != "" {
		t.Errorf("unexpired signature refused: %s", why)
	}
	if why := g.signatureRefusal(wire.FileSignature("/a", "read", "", tok, past), "/a", "read", "", past, tok); why != refusedExpired {
		t.Errorf("expired signature: %q, want %q", why, refusedExpired)
	}
	// Expired, but not signed with the token: not a signature at all.
	if why := g.signatureRefusal(wire.FileSignature("/a", "read", "", "other", past), "/a", "read", "", past, tok); why != refusedToken {
		t.Errorf("forged expired signature: %q, want %q", why, refusedToken)
	}
	if why := g.signatureRefusal(wire.FileSignature("/a", "read", "", tok, "x"), "/a", "read", "", "x", tok); why != refusedToken {
		t.Errorf("malformed expiration: %q, want %q", why, refusedToken)
	}
}
