package auth

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/envd/defaults"
	"roost.dev/roost/envd/identity"
	"roost.dev/roost/wire"
)

// TokenHeader carries the sandbox's envd access token.
const TokenHeader = wire.HeaderAccessToken

// Guard checks requests against the access token in a defaults.Set.
type Guard struct {
	defaults *defaults.Set
	now      func() time.Time
}

// NewGuard returns a Guard reading the token and default user from d.
func NewGuard(d *defaults.Set) *Guard {
	return &Guard{defaults: d, now: time.Now}
}

// Refusals, in E2B envd's words (its SDK tests compare them).
const (
	refusedToken   = "missing or invalid access token"
	refusedExpired = "signature is already expired"
)

// Wrap returns next behind the access check. health is served without one.
func (g *Guard) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			if why := g.refusal(r); why != "" {
				WriteError(w, http.StatusUnauthorized, why)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// refusal says why r may not pass, or "" when it may.
func (g *Guard) refusal(r *http.Request) string {
	token := g.defaults.Token()
	if token == "" {
		return ""
	}
	if got := r.Header.Get(TokenHeader); got != "" {
		if subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1 {
			return ""
		}
		return refusedToken
	}
	if r.URL.Path != "/files" {
		return refusedToken
	}
	q := r.URL.Query()
	op := "read"
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		op = "write"
	}
	return g.signatureRefusal(q.Get("signature"), q.Get("path"), op, q.Get("username"), q.Get("signature_expiration"), token)
}

// signatureRefusal checks a /files signature: "" when it signs this request
// and has not expired. That it expired is said only of a genuine signature.
func (g *Guard) signatureRefusal(sig, path, op, username, expiration, token string) string {
	if !strings.HasPrefix(sig, "v1_") {
		return refusedToken
	}
	want := wire.FileSignature(path, op, username, token, expiration)
	// The SDK strips base64 padding; accept a padded form too.
	sig = strings.TrimRight(sig, "=")
	if subtle.ConstantTimeCompare([]byte(sig), []byte(want)) != 1 {
		return refusedToken
	}
	if expiration == "" {
		return ""
	}
	exp, err := strconv.ParseInt(expiration, 10, 64)
	if err != nil {
		return refusedToken
	}
	if g.now().Unix() > exp {
		return refusedExpired
	}
	return ""
}

// BasicUser returns the user name in an "Authorization: Basic" header, which
// E2B clients use to choose the Unix user (the password is empty).
func BasicUser(h http.Header) (string, bool) {
	v := h.Get("Authorization")
	const prefix = "Basic "
	if len(v) < len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v[len(prefix):]))
	if err != nil {
		return "", false
	}
	name, _, _ := strings.Cut(string(raw), ":")
	return name, name != ""
}

// User resolves the Unix user a request acts as: the named one, else the
// Basic-auth user, else the sandbox's default user.
func (g *Guard) User(named string, h http.Header) (identity.User, error) {
	name := named
	if name == "" {
		name, _ = BasicUser(h)
	}
	if name == "" {
		name = g.defaults.User()
	}
	return identity.Lookup(name)
}

// ConnectUser is User for Connect handlers: the error is already a Connect
// error with the right code.
func (g *Guard) ConnectUser(h http.Header) (identity.User, error) {
	u, err := g.User("", h)
	if err != nil {
		return identity.User{}, connect.NewError(connect.CodeInvalidArgument, err)
	}
	return u, nil
}

// Workdir is the directory a process starts in when it names none.
func (g *Guard) Workdir(u identity.User) string {
	if wd := g.defaults.Workdir(); wd != "" {
		return wd
	}
	return u.Home
}

// Defaults exposes the set the guard reads, for handlers that need the
// sandbox-wide environment.
func (g *Guard) Defaults() *defaults.Set { return g.defaults }

// Error is envd's JSON error body on plain HTTP endpoints.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// WriteError writes an Error body with the given status.
func WriteError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Error{Code: status, Message: msg})
}
