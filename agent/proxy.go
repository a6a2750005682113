package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"roost.dev/roost/bufpool"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/proxy"
	"roost.dev/roost/wire"
)

// resolver finds where a sandbox's ports are. Errors wrap
// errdefs.ErrNotFound (unknown sandbox), ErrPaused, or another category
// for a sandbox that cannot take traffic now; the answer is its status.
type resolver interface {
	proxyTarget(id string) (proxy.Instance, error)
}

// proxy forwards /proxy/{id}/{port}/{rest...} to http://{sandbox}:{port}/{rest}.
// The path after the port, its escaping, a trailing slash and the query pass
// through untouched, as do the Host header, WebSocket upgrades and streamed
// responses. Redirects are not rewritten: the caller (the control plane's
// proxy) knows its own prefix. It forwards through the proxy package's
// core (proxy.Upstream), as the control plane's proxy does.
type sandboxProxy struct {
	resolve  resolver
	upstream *proxy.Upstream
	rp       *httputil.ReverseProxy
	log      *slog.Logger
}

// proxyTarget is what the handler resolved, handed to Rewrite.
type proxyTarget struct {
	key     string // the sandbox's run (proxy.Instance.Key)
	addr    netip.AddrPort
	rawPath string // escaped, starting with "/"
}

type targetKey struct{}

func newProxy(r resolver, log *slog.Logger) *sandboxProxy {
	p := &sandboxProxy{resolve: r, log: log, upstream: proxy.NewUpstream(wire.EnvdPort, urlPort)}
	p.rp = &httputil.ReverseProxy{
		Rewrite:    p.rewrite,
		Transport:  p.upstream,
		BufferPool: bufpool.New(),
		// Zero: streamed responses (unknown length, SSE) are flushed at
		// every write by ReverseProxy's own rule; others go out buffered.
		FlushInterval: 0,
		ErrorHandler:  p.fail,
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return p
}

// urlPort is the sandbox port a rewritten request goes to.
func urlPort(req *http.Request) int {
	n, _ := strconv.Atoi(req.URL.Port())
	return n
}

func (p *sandboxProxy) close() {
	p.upstream.Close()
}

// parseProxyPath splits an escaped /proxy/{id}/{port}/{rest...} path.
// rest keeps its escaping and always starts with "/".
func parseProxyPath(escaped string) (id string, port uint16, rest string, err error) {
	tail, ok := strings.CutPrefix(escaped, wire.ProxyPrefix)
	if !ok {
		return "", 0, "", fmt.Errorf("not a proxy path: %w", errdefs.ErrNotFound)
	}
	id, tail, _ = strings.Cut(tail, "/")
	portStr, rest, hasRest := strings.Cut(tail, "/")
	if !validID(id) {
		return "", 0, "", fmt.Errorf("sandbox id %q: %w", id, errdefs.ErrNotFound)
	}
	n, perr := strconv.ParseUint(portStr, 10, 16)
	if perr != nil || n == 0 || portStr[0] == '0' {
		return "", 0, "", fmt.Errorf("port %q: %w", portStr, errdefs.ErrInvalid)
	}
	if !hasRest {
		rest = ""
	}
	return id, uint16(n), "/" + rest, nil
}

// notRunningStatus is the answer for a sandbox the proxy cannot reach:
// 502 for one that is unknown (never made, killed, timed out) or paused,
// as E2B answers on a sandbox's ports and the control plane's proxy does
// (E2B's SDKs read it as "not running"; a 404 would read as the sandbox's
// own server answering "no such file"); otherwise its category's status.
func notRunningStatus(err error) int {
	if errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, ErrPaused) {
		return http.StatusBadGateway
	}
	return errdefs.HTTPStatus(err)
}

func (p *sandboxProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, port, rest, err := parseProxyPath(r.URL.EscapedPath())
	if err == nil {
		if _, perr := url.PathUnescape(rest); perr != nil {
			err = fmt.Errorf("path: %v: %w", perr, errdefs.ErrInvalid)
		}
	}
	if err != nil {
		errdefs.WriteHTTP(w, errdefs.HTTPStatus(err), err.Error())
		return
	}
	inst, err := p.resolve.proxyTarget(id)
	if err != nil {
		errdefs.WriteHTTP(w, notRunningStatus(err), err.Error())
		return
	}
	t := proxyTarget{key: inst.Key, addr: netip.AddrPortFrom(inst.Addr, port), rawPath: rest}
	if r.Body != nil && r.Body != http.NoBody {
		defer proxy.FullDuplex(w, r)()
	}
	ctx := proxy.ToSandbox(context.WithValue(r.Context(), targetKey{}, t), t.key, t.addr)
	p.rp.ServeHTTP(w, r.WithContext(ctx))
}

func (p *sandboxProxy) rewrite(pr *httputil.ProxyRequest) {
	t := pr.In.Context().Value(targetKey{}).(proxyTarget)
	u := pr.Out.URL
	u.Scheme, u.Host, u.User = "http", proxy.SandboxHost(t.key, t.addr), nil
	u.Path, _ = url.PathUnescape(t.rawPath) // validated in ServeHTTP
	u.RawPath = t.rawPath
	// The query stays as sent, byte for byte.
	u.RawQuery = pr.In.URL.RawQuery
	u.ForceQuery = pr.In.URL.ForceQuery
	// The Host header passes through: the caller decides what the
	// sandbox's server sees.
	pr.Out.Host = pr.In.Host
	// Keep the chain of forwarders (the control plane's proxy is one),
	// and add this hop.
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v, ok := pr.In.Header[h]; ok {
			pr.Out.Header[h] = v
		}
	}
	host, proto := pr.Out.Header.Get("X-Forwarded-Host"), pr.Out.Header.Get("X-Forwarded-Proto")
	pr.SetXForwarded()
	if host != "" {
		pr.Out.Header.Set("X-Forwarded-Host", host)
	}
	if proto != "" {
		pr.Out.Header.Set("X-Forwarded-Proto", proto)
	}
}

// fail answers a request the sandbox could not serve: 502 when its server
// cannot be reached (marked when it refused the connection, so the control
// plane's proxy may retry), 504 when it did not answer in time, nothing
// when the client has gone.
func (p *sandboxProxy) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	err = proxy.UpstreamError(err)
	status := proxy.WriteUpstreamError(w, err, err.Error())
	t, _ := r.Context().Value(targetKey{}).(proxyTarget)
	p.log.Debug("proxy request failed", "target", t.addr.String(), "status", status, "err", err)
}
