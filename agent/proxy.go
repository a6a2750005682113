package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"roost.dev/roost/bufpool"
	"roost.dev/roost/errdefs"
)

// proxyPrefix starts every proxied path: /proxy/{id}/{port}/{rest...}.
const proxyPrefix = "/proxy/"

// resolver finds where a sandbox's ports are. Errors wrap
// errdefs.ErrNotFound (unknown sandbox), ErrPaused, or another category
// for a sandbox that cannot take traffic now.
type resolver interface {
	proxyTarget(id string) (netip.Addr, error)
}

// proxy forwards /proxy/{id}/{port}/{rest...} to http://{sandbox}:{port}/{rest}.
// The path after the port, its escaping, a trailing slash and the query pass
// through untouched, as do the Host header, WebSocket upgrades and streamed
// responses. Redirects are not rewritten: the caller (the control plane's
// proxy) knows its own prefix.
type proxy struct {
	resolve resolver
	// user carries traffic to the sandbox's own servers, envd traffic to
	// envd: separate pools, so that a flood of user traffic (a dev
	// server's polling, a notebook's WebSockets) never holds the
	// connections that terminals, commands and files need.
	user, envd *http.Transport
	rp         *httputil.ReverseProxy
	log        *slog.Logger
}

// envdPort is envd's port in every sandbox (the E2B wire contract).
const envdPort = "49983"

// proxyTarget is what the handler resolved, handed to Rewrite.
type proxyTarget struct {
	addr    netip.AddrPort
	rawPath string // escaped, starting with "/"
}

type targetKey struct{}

// dialSandbox connects to a sandbox's port. The connection closes with a
// reset instead of a FIN (SO_LINGER 0), leaving no TIME_WAIT on the host:
// a sandbox server that closes every connection (HTTP/1.0, as python's
// http.server does) would otherwise leave one per request, and at a few
// hundred requests a second the ports to that server run out within a
// minute and every connect searches for a free one. The link is local (a
// veth) and the proxy closes only after a whole response, or to abort one.
func dialSandbox(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	return c, nil
}

func newSandboxTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           dialSandbox,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Bodies pass through as the server encoded them.
		DisableCompression: true,
	}
}

func newProxy(r resolver, log *slog.Logger) *proxy {
	p := &proxy{resolve: r, log: log, user: newSandboxTransport(), envd: newSandboxTransport()}
	p.rp = &httputil.ReverseProxy{
		Rewrite:    p.rewrite,
		Transport:  p,
		BufferPool: bufpool.New(),
		// Zero: streamed responses (unknown length, SSE) are flushed at
		// every write by ReverseProxy's own rule; others go out buffered.
		FlushInterval: 0,
		ErrorHandler:  p.fail,
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return p
}

// RoundTrip sends a rewritten request on its port's transport.
func (p *proxy) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Port() == envdPort {
		return p.envd.RoundTrip(req)
	}
	return p.user.RoundTrip(req)
}

func (p *proxy) close() {
	p.user.CloseIdleConnections()
	p.envd.CloseIdleConnections()
}

// parseProxyPath splits an escaped /proxy/{id}/{port}/{rest...} path.
// rest keeps its escaping and always starts with "/".
func parseProxyPath(escaped string) (id string, port uint16, rest string, err error) {
	tail, ok := strings.CutPrefix(escaped, proxyPrefix)
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

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, port, rest, err := parseProxyPath(r.URL.EscapedPath())
	if err != nil {
		writeProxyError(w, resolveStatus(err), err)
		return
	}
	if _, err := url.PathUnescape(rest); err != nil {
		writeProxyError(w, http.StatusBadRequest, fmt.Errorf("path: %w", err))
		return
	}
	addr, err := p.resolve.proxyTarget(id)
	if err != nil {
		writeProxyError(w, resolveStatus(err), err)
		return
	}
	t := proxyTarget{addr: netip.AddrPortFrom(addr, port), rawPath: rest}
	enableFullDuplex(w)
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), targetKey{}, t)))
}

// enableFullDuplex lets a proxied request's body keep flowing upstream
// after the response has begun. Without it Go's HTTP/1 server, on the
// first response write, drains and closes whatever of the request body the
// transport has not yet copied (the final chunk of a streamed Connect
// request, say); the transport's copy then fails and it closes the
// upstream connection in the middle of the response. HTTP/2 is full
// duplex already and answers ErrNotSupported, which is fine.
func enableFullDuplex(w http.ResponseWriter) {
	_ = http.NewResponseController(w).EnableFullDuplex()
}

// resolveStatus maps a resolver error to the proxy's answer.
func resolveStatus(err error) int {
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrPaused):
		return http.StatusConflict
	case errors.Is(err, errdefs.ErrInvalid):
		return http.StatusBadRequest
	default:
		return http.StatusServiceUnavailable
	}
}

func (p *proxy) rewrite(pr *httputil.ProxyRequest) {
	t := pr.In.Context().Value(targetKey{}).(proxyTarget)
	u := pr.Out.URL
	u.Scheme, u.Host, u.User = "http", t.addr.String(), nil
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
// cannot be reached, 504 when it did not answer in time, nothing when the
// client has gone.
func (p *proxy) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	status := proxyErrorStatus(err)
	var op *net.OpError
	if status == http.StatusBadGateway && errors.As(err, &op) && op.Op == "dial" {
		// Nothing listens yet: the control plane's proxy may retry.
		w.Header().Set(DialErrorHeader, "dial")
	}
	t, _ := r.Context().Value(targetKey{}).(proxyTarget)
	p.log.Debug("proxy request failed", "target", t.addr.String(), "status", status, "err", err)
	writeProxyError(w, status, err)
}

// DialErrorHeader marks a 502 that means the sandbox's port refused the
// connection (a server that is still starting), as opposed to a 502 from
// the sandbox's own server. The control plane's proxy retries on it; it
// names the same header (the two processes share only this wire fact).
const DialErrorHeader = "Roost-Proxy-Error"

func proxyErrorStatus(err error) int {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// writeProxyError writes the JSON error body E2B clients expect.
func writeProxyError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{status, err.Error()})
}
