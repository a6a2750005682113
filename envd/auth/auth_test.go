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
	if !g.validSignature(sig, "/a", "read", "user", "", tok) {
		t.Error("valid signature rejected")
	}
	for name, ok := range map[string]bool{
		"other path": g.validSignature(sig, "/b", "read", "user", "", tok),
		"other op":   g.validSignature(sig, "/a", "write", "user", "", tok),
		"other user": g.validSignature(sig, "/a", "read", "root", "", tok),
		"no prefix":  g.validSignature(sig[3:], "/a", "read", "user", "", tok),
		"empty":      g.validSignature("", "/a", "read", "user", "", tok),
	} {
		if ok {
			t.Errorf("%s: accepted", name)
		}
	}
	future, past := "1700000100", "1699999900"
	if !g.validSignature(wire.FileSignature("/a", "read", "", tok, future), "/a", "read", "", future, tok) {
		t.Error("unexpired signature rejected")
	}
	if g.validSignature(wire.FileSignature("/a", "read", "", tok, past), "/a", "read", "", past, tok) {
		t.Error("expired signature accepted")
	}
	if g.validSignature(wire.FileSignature("/a", "read", "", tok, "x"), "/a", "read", "", "x", tok) {
		t.Error("malformed expiration accepted")
	}
}
