package proxy

import (
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"roost.dev/roost/wire"
)

func TestParseHost(t *testing.T) {
	for _, tc := range []struct {
		host, domain string
		id           string
		port         int // 0: no match
	}{
		{"8080-abc.localhost", "localhost", "abc", 8080},
		{"8080-abc.localhost:3000", "localhost", "abc", 8080},
		{"49983-abc123.localhost.", "localhost", "abc123", 49983},
		{"8080-ABC.LocalHost:3000", "localhost", "abc", 8080},
		{"1-a.sb.example.com", "sb.example.com", "a", 1},
		{"65535-z9.sb.example.com:443", "sb.example.com", "z9", 65535},
		{"8080-abc.localhost", "example.com", "", 0},
		{"localhost", "localhost", "", 0},
		{"localhost:3000", "localhost", "", 0},
		{"127.0.0.1:3000", "localhost", "", 0},
		{".localhost", "localhost", "", 0},
		{"-abc.localhost", "localhost", "", 0},
		{"8080-.localhost", "localhost", "", 0},
		{"8080abc.localhost", "localhost", "", 0},
		{"0-abc.localhost", "localhost", "", 0},
		{"080-abc.localhost", "localhost", "", 0},
		{"65536-abc.localhost", "localhost", "", 0},
		{"+80-abc.localhost", "localhost", "", 0},
		{"80-a-b.localhost", "localhost", "", 0},
		{"80-a_b.localhost", "localhost", "", 0},
		{"80-abc.evil.localhost", "localhost", "", 0},
		{"80-abc.notlocalhost", "localhost", "", 0},
		{"80-abc.localhost.evil.com", "localhost", "", 0},
		{"[::1]:3000", "localhost", "", 0},
		{"80-" + strings.Repeat("a", 64) + ".localhost", "localhost", "", 0},
		{"", "localhost", "", 0},
	} {
		id, port, ok := parseHost(tc.host, tc.domain)
		if ok != (tc.port != 0) || id != tc.id || port != tc.port {
			t.Errorf("parseHost(%q, %q) = %q, %d, %v; want %q, %d", tc.host, tc.domain, id, port, ok, tc.id, tc.port)
		}
	}
}

func TestMatch(t *testing.T) {
	p := New(Config{Domain: "Sb.Example.com."}, nil, slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		name    string
		host    string
		target  string
		headers map[string]string
		want    Route
		ok      bool
	}{
		{"host", "80-abc.sb.example.com", "/x/y/?q=1", nil,
			Route{SandboxID: "abc", Port: 80, Path: "/x/y/", Form: FormHost}, true},
		{"host escaped", "80-abc.sb.example.com:8443", "/a%2Fb%20", nil,
			Route{SandboxID: "abc", Port: 80, Path: "/a%2Fb%20", Form: FormHost}, true},
		{"headers", "127.0.0.1:3000", "/process.Process/Start", map[string]string{wire.HeaderSandboxID: "abc", wire.HeaderSandboxPort: "49983"},
			Route{SandboxID: "abc", Port: 49983, Path: "/process.Process/Start", Form: FormHeader}, true},
		{"headers beat path", "127.0.0.1:3000", "/proxy/other/1/x", map[string]string{wire.HeaderSandboxID: "abc", wire.HeaderSandboxPort: "2"},
			Route{SandboxID: "abc", Port: 2, Path: "/proxy/other/1/x", Form: FormHeader}, true},
		{"host beats headers", "80-abc.sb.example.com", "/", map[string]string{wire.HeaderSandboxID: "def", wire.HeaderSandboxPort: "2"},
			Route{SandboxID: "abc", Port: 80, Path: "/", Form: FormHost}, true},
		{"bad headers fall to path", "127.0.0.1", "/proxy/abc/80/", map[string]string{wire.HeaderSandboxID: "abc", wire.HeaderSandboxPort: "x"},
			Route{SandboxID: "abc", Port: 80, Path: "/", Form: FormPath, Prefix: "/proxy/abc/80"}, true},
		{"only id header", "127.0.0.1", "/", map[string]string{wire.HeaderSandboxID: "abc"}, Route{}, false},
		{"path", "127.0.0.1", "/proxy/abc/8000/dir/?x", nil,
			Route{SandboxID: "abc", Port: 8000, Path: "/dir/", Form: FormPath, Prefix: "/proxy/abc/8000"}, true},
		{"path bare", "127.0.0.1", "/proxy/abc/8000", nil,
			Route{SandboxID: "abc", Port: 8000, Path: "/", Form: FormPath, Prefix: "/proxy/abc/8000"}, true},
		{"path double slash", "127.0.0.1", "/proxy/abc/8000//x//", nil,
			Route{SandboxID: "abc", Port: 8000, Path: "//x//", Form: FormPath, Prefix: "/proxy/abc/8000"}, true},
		{"path escaped", "127.0.0.1", "/proxy/abc/8000/a%2Fb", nil,
			Route{SandboxID: "abc", Port: 8000, Path: "/a%2Fb", Form: FormPath, Prefix: "/proxy/abc/8000"}, true},
		{"path no port", "127.0.0.1", "/proxy/abc", nil, Route{}, false},
		{"path bad port", "127.0.0.1", "/proxy/abc/0/", nil, Route{}, false},
		{"path upper id", "127.0.0.1", "/proxy/ABC/80/", nil, Route{}, false},
		{"path escaped id", "127.0.0.1", "/proxy/a%2Fb/80/", nil, Route{}, false},
		{"api", "127.0.0.1:3000", "/v2/sandboxes", nil, Route{}, false},
	} {
		u, err := url.ParseRequestURI(tc.target)
		if err != nil {
			t.Fatal(err)
		}
		r := &http.Request{Method: "GET", Host: tc.host, URL: u, Header: http.Header{}}
		for k, v := range tc.headers {
			r.Header.Set(k, v)
		}
		got, ok := p.Match(r)
		if ok != tc.ok || got != tc.want {
			t.Errorf("%s: Match = %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("8080-abc.localhost:3000", "", "", "/x?y")
	f.Add("127.0.0.1", "abc", "49983", "/process.Process/Start")
	f.Add("127.0.0.1", "", "", "/proxy/abc/8000/dir/")
	f.Add("[::1]:80", "ABC", "080", "/proxy//0//")
	f.Add("80-a.localhost.", "a", "65536", "*")
	p := New(Config{}, nil, slog.New(slog.DiscardHandler))
	f.Fuzz(func(t *testing.T, host, idh, porth, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := &http.Request{Method: "GET", Host: host, URL: u, Header: http.Header{}}
		r.Header[wire.HeaderSandboxID] = []string{idh}
		r.Header[wire.HeaderSandboxPort] = []string{porth}
		route, ok := p.Match(r)
		if !ok {
			if route != (Route{}) {
				t.Fatalf("no match but %+v", route)
			}
			return
		}
		if !validID(route.SandboxID) || route.Port < 1 || route.Port > 65535 || !strings.HasPrefix(route.Path, "/") {
			t.Fatalf("invalid route %+v", route)
		}
		if _, err := url.PathUnescape(route.Path); err != nil {
			t.Fatalf("path %q does not unescape: %v", route.Path, err)
		}
		wantPrefix := ""
		if route.Form == FormPath {
			wantPrefix = "/proxy/" + route.SandboxID + "/" + strconv.Itoa(route.Port)
			if !strings.HasPrefix(u.EscapedPath(), wantPrefix) {
				t.Fatalf("path route %+v from %q", route, u.EscapedPath())
			}
		}
		if route.Prefix != wantPrefix {
			t.Fatalf("prefix %q, want %q", route.Prefix, wantPrefix)
		}
	})
}

func TestRewriteLocation(t *testing.T) {
	const prefix, host = "/proxy/abc/8000", "127.0.0.1:3000"
	for _, tc := range []struct{ in, want string }{
		{"/dir/", prefix + "/dir/"},
		{"/", prefix + "/"},
		{"/a%2Fb?x=1#f", prefix + "/a%2Fb?x=1#f"},
		{prefix + "/already/", prefix + "/already/"},
		{prefix, prefix},
		{prefix + "?q", prefix + "?q"},
		{"/proxy/abc/80001/x", prefix + "/proxy/abc/80001/x"},
		{"http://127.0.0.1:3000/dir/", "http://127.0.0.1:3000" + prefix + "/dir/"},
		{"https://127.0.0.1:3000/dir/", "https://127.0.0.1:3000" + prefix + "/dir/"},
		{"HTTP://127.0.0.1:3000", "HTTP://127.0.0.1:3000" + prefix + "/"},
		{"http://127.0.0.1:3000?x", "http://127.0.0.1:3000" + prefix + "/?x"},
		{"http://user@127.0.0.1:3000/x", "http://user@127.0.0.1:3000" + prefix + "/x"},
		{"ws://127.0.0.1:3000/ws", "ws://127.0.0.1:3000" + prefix + "/ws"},
		{"//127.0.0.1:3000/x", "//127.0.0.1:3000" + prefix + "/x"},
		{"http://127.0.0.1:3000" + prefix + "/x", "http://127.0.0.1:3000" + prefix + "/x"},
		{"http://example.com/dir/", "http://example.com/dir/"},
		{"http://127.0.0.1:3001/dir/", "http://127.0.0.1:3001/dir/"},
		{"http://127.0.0.1/dir/", "http://127.0.0.1/dir/"},
		{"//example.com/x", "//example.com/x"},
		{`/\example.com/x`, `/\example.com/x`},
		{"ftp://127.0.0.1:3000/x", "ftp://127.0.0.1:3000/x"},
		{"mailto:a@127.0.0.1:3000", "mailto:a@127.0.0.1:3000"},
		{"dir/", "dir/"},
		{"../up", "../up"},
		{"?page=2", "?page=2"},
		{"", ""},
		{"http://[::1", "http://[::1"},
	} {
		if got := rewriteLocation(tc.in, prefix, host); got != tc.want {
			t.Errorf("rewriteLocation(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzRewriteLocation: a sandbox's headers are untrusted; rewriting never
// panics and only ever inserts the prefix (and at most one "/").
func FuzzRewriteLocation(f *testing.F) {
	for _, s := range []string{"/dir/", "http://127.0.0.1:3000", "//127.0.0.1:3000?x", `/\x`, "http://u@127.0.0.1:3000#f", "http://[::1"} {
		f.Add(s)
	}
	const prefix, host = "/proxy/abc/8000", "127.0.0.1:3000"
	f.Fuzz(func(t *testing.T, in string) {
		got := rewriteLocation(in, prefix, host)
		if got == in {
			return
		}
		for i := 0; i <= len(in); i++ {
			if got == in[:i]+prefix+in[i:] || got == in[:i]+prefix+"/"+in[i:] {
				return
			}
		}
		t.Fatalf("rewriteLocation(%q) = %q changed more than inserting the prefix", in, got)
	})
}
