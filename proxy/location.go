package proxy

import (
	"net/url"
	"strings"
)

// rewriteLocation keeps a redirect of a path-form request under prefix
// (/proxy/{id}/{port}). The sandbox's server sees paths without the prefix
// and the client's Host, so it redirects to "/dir/" or to
// "http://{Host}/dir/"; the browser must go to "/proxy/{id}/{port}/dir/".
//
//   - root-relative ("/x"): prefixed;
//   - absolute or scheme-relative with the request's own host: the prefix is
//     inserted after the authority, the scheme kept (an http → https
//     redirect must stay one, or it would loop);
//   - relative ("x", "../x", "?q"): untouched, the browser resolves them
//     against the prefixed URL it is on;
//   - other hosts, other schemes, unparseable values: untouched;
//   - already under the prefix (a server that honours X-Forwarded-Prefix):
//     untouched.
//
// Everything but the inserted prefix stays byte for byte, escaping included.
func rewriteLocation(loc, prefix, reqHost string) string {
	switch {
	case loc == "" || prefix == "":
		return loc
	case strings.HasPrefix(loc, "//"), strings.HasPrefix(loc, `/\`):
		// Scheme-relative (browsers read "/\" as "//" too).
		return insertPrefix(loc, 2, prefix, reqHost)
	case loc[0] == '/':
		if underPrefix(loc, prefix) {
			return loc
		}
		return prefix + loc
	}
	u, err := url.Parse(loc)
	if err != nil || !u.IsAbs() || u.Opaque != "" {
		return loc
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https", "ws", "wss":
	default:
		return loc
	}
	i := strings.Index(loc, "://")
	if i < 0 {
		return loc
	}
	return insertPrefix(loc, i+3, prefix, reqHost)
}

// insertPrefix inserts prefix after the authority that starts at loc[start:],
// when that authority's host is reqHost.
func insertPrefix(loc string, start int, prefix, reqHost string) string {
	end := start + strings.IndexAny(loc[start:], `/\?#`)
	if end < start {
		end = len(loc)
	}
	authority := loc[start:end]
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		authority = authority[at+1:]
	}
	if reqHost == "" || !strings.EqualFold(authority, reqHost) {
		return loc
	}
	rest := loc[end:]
	if underPrefix(rest, prefix) {
		return loc
	}
	if !strings.HasPrefix(rest, "/") {
		// "http://host" or "http://host?q": the root of the sandbox.
		rest = "/" + rest
	}
	return loc[:end] + prefix + rest
}

func underPrefix(path, prefix string) bool {
	rest, ok := strings.CutPrefix(path, prefix)
	return ok && (rest == "" || rest[0] == '/' || rest[0] == '?' || rest[0] == '#')
}
