package files

import (
	"bytes"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/envd/auth"
	"roost.dev/roost/wire"
)

func TestAuth(t *testing.T) {
	e := newTestEnv(t)
	const token = "s3cr3t-envd-token"
	e.setToken(token)
	src := e.path("readable.txt")
	writeFile(t, src, []byte("guarded"), 0o644)
	dst := e.path("written.txt")
	future := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	past := strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10)
	name := e.user.Name
	other := "nobody"
	if name == other {
		other = "root"
	}

	signed := func(path, op, user, exp string) url.Values {
		q := url.Values{"path": {path}, "signature": {wire.FileSignature(path, op, user, token, exp)}}
		if user != "" {
			q.Set("username", user)
		}
		if exp != "" {
			q.Set("signature_expiration", exp)
		}
		return q
	}
	withToken := http.Header{auth.TokenHeader: {token}}

	reads := []struct {
		name   string
		q      url.Values
		hdr    http.Header
		status int
	}{
		{"no token", url.Values{"path": {src}}, nil, 401},
		{"wrong token", url.Values{"path": {src}}, http.Header{auth.TokenHeader: {"nope"}}, 401},
		{"token", url.Values{"path": {src}}, withToken, 200},
		{"signature", signed(src, "read", "", ""), nil, 200},
		{"signature with user", signed(src, "read", name, ""), nil, 200},
		{"signature with expiration", signed(src, "read", name, future), nil, 200},
		{"expired signature", signed(src, "read", name, past), nil, 401},
		{"write signature used to read", signed(src, "write", "", ""), nil, 401},
		{"signature for another path", func() url.Values { q := signed(e.path("other"), "read", "", ""); q.Set("path", src); return q }(), nil, 401},
		{"signature for another user", func() url.Values { q := signed(src, "read", other, ""); q.Set("username", name); return q }(), nil, 401},
	}
	for _, c := range reads {
		t.Run("read/"+c.name, func(t *testing.T) {
			resp := e.do(t, http.MethodGet, c.q, c.hdr, nil)
			if c.status != 200 {
				wantError(t, resp, c.status)
				return
			}
			if body := readBody(t, resp); resp.StatusCode != 200 || string(body) != "guarded" {
				t.Fatalf("status %d body %q", resp.StatusCode, body)
			}
		})
	}

	writes := []struct {
		name   string
		q      url.Values
		hdr    http.Header
		status int
	}{
		{"no token", url.Values{"path": {dst}}, nil, 401},
		{"token", url.Values{"path": {dst}}, withToken, 200},
		{"signature", signed(dst, "write", "", ""), nil, 200},
		{"signature with expiration", signed(dst, "write", name, future), nil, 200},
		{"expired signature", signed(dst, "write", name, past), nil, 401},
		{"read signature used to write", signed(dst, "read", "", ""), nil, 401},
	}
	for i, c := range writes {
		t.Run("write/"+c.name, func(t *testing.T) {
			content := "upload " + strconv.Itoa(i)
			// An upload URL: path and signature in the query, a form body.
			body, ct := buildForm(t, formPart{filename: "local.txt", data: []byte(content)})
			hdr := http.Header{"Content-Type": {ct}}
			if c.hdr != nil {
				hdr.Set(auth.TokenHeader, c.hdr.Get(auth.TokenHeader))
			}
			resp := e.do(t, http.MethodPost, c.q, hdr, bytes.NewReader(body))
			if c.status != 200 {
				wantError(t, resp, c.status)
				if got, _ := os.ReadFile(dst); string(got) == content {
					t.Fatal("rejected upload was written")
				}
				return
			}
			wantEntries(t, resp)
			wantFile(t, dst, []byte(content))
		})
	}

	t.Run("octet-stream with signature", func(t *testing.T) {
		wantEntries(t, e.postOctet(t, signed(dst, "write", "", future), nil, strings.NewReader("raw signed")))
		wantFile(t, dst, []byte("raw signed"))
	})
}
