package proxy

import (
	"net"
	"net/http"
	"strings"

	"roost.dev/roost/wire"
)

// maxIDLen bounds a sandbox ID: it must fit a hostname label.
const maxIDLen = 63

// Form is the way a request named its sandbox.
type Form int

const (
	FormHost   Form = iota + 1 // Host: {port}-{sandboxID}.{domain}
	FormHeader                 // E2b-Sandbox-Id and E2b-Sandbox-Port headers
	FormPath                   // /proxy/{sandboxID}/{port}/...
)

func (f Form) String() string {
	switch f {
	case FormHost:
		return "host"
	case FormHeader:
		return "header"
	case FormPath:
		return "path"
	default:
		return "unknown"
	}
}

// Route is where a request goes.
type Route struct {
	SandboxID string
	Port      int
	// Path is the upstream path, escaped as the client sent it, always
	// starting with "/"; a trailing slash is kept.
	Path string
	Form Form
	// Prefix is "/proxy/{sandboxID}/{port}" for the path form, else "".
	Prefix string
}

// Match says whether r is sandbox traffic, and where it goes. The Host form
// wins over the headers, which win over the path: a Host naming a sandbox
// is unambiguous, and SDK headers arrive at the control plane's own host,
// where any path belongs to the sandbox. Match does not resolve the
// sandbox; it only parses. It is safe for concurrent use.
func (p *Proxy) Match(r *http.Request) (Route, bool) {
	if id, port, ok := parseHost(r.Host, p.domain); ok {
		return Route{SandboxID: id, Port: port, Path: requestPath(r), Form: FormHost}, true
	}
	if idh, porth := r.Header.Get(wire.HeaderSandboxID), r.Header.Get(wire.HeaderSandboxPort); idh != "" || porth != "" {
		id := strings.ToLower(strings.TrimSpace(idh))
		port, ok := parsePort(strings.TrimSpace(porth))
		if ok && validID(id) {
			return Route{SandboxID: id, Port: port, Path: requestPath(r), Form: FormHeader}, true
		}
	}
	if r.URL == nil {
		return Route{}, false
	}
	if id, port, prefix, rest, ok := parsePath(r.URL.EscapedPath()); ok {
		return Route{SandboxID: id, Port: port, Path: rest, Form: FormPath, Prefix: prefix}, true
	}
	return Route{}, false
}

// requestPath is r's escaped path, starting with "/".
func requestPath(r *http.Request) string {
	if r.URL == nil {
		return "/"
	}
	p := r.URL.EscapedPath()
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

// parseHost matches {port}-{sandboxID}.{domain}, with or without a port,
// in any case, with or without a trailing dot. domain is lowercase.
func parseHost(host, domain string) (id string, port int, ok bool) {
	if host == "" || domain == "" {
		return "", 0, false
	}
	host = strings.ToLower(host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(host, ".")
	label, ok := strings.CutSuffix(host, "."+domain)
	if !ok || strings.Contains(label, ".") {
		return "", 0, false
	}
	portStr, id, ok := strings.Cut(label, "-")
	if !ok || !validID(id) {
		return "", 0, false
	}
	if port, ok = parsePort(portStr); !ok {
		return "", 0, false
	}
	return id, port, true
}

// parsePath splits an escaped /proxy/{id}/{port}[/rest] path. prefix is
// /proxy/{id}/{port}; rest keeps its escaping and starts with "/" ("/"
// when the path ends at the port). Both are escaped's own bytes.
func parsePath(escaped string) (id string, port int, prefix, rest string, ok bool) {
	tail, ok := strings.CutPrefix(escaped, wire.ProxyPrefix)
	if !ok {
		return "", 0, "", "", false
	}
	id, tail, ok = strings.Cut(tail, "/")
	if !ok || !validID(id) {
		return "", 0, "", "", false
	}
	portStr, _, hasRest := strings.Cut(tail, "/")
	port, ok = parsePort(portStr)
	if !ok {
		return "", 0, "", "", false
	}
	end := len(escaped) - len(tail) + len(portStr)
	if !hasRest {
		return id, port, escaped[:end], "/", true
	}
	return id, port, escaped[:end], escaped[end:], true
}

// parsePort accepts a decimal port 1-65535 without sign or leading zero.
func parsePort(s string) (int, bool) {
	if s == "" || len(s) > 5 || s[0] == '0' {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n <= 65535
}

// validID accepts sandbox IDs as the control plane makes them: [a-z0-9]+,
// short enough for a hostname label.
func validID(id string) bool {
	if id == "" || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
