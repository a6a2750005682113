package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/wire"
)

// Upstream is the connection pools a proxy forwards on, to host agents or
// straight to sandboxes: the control plane's Proxy and the host agent's
// /proxy/ endpoint both send through one. It is an http.RoundTripper and
// safe for concurrent use.
//
// Traffic to envd's port and traffic to the sandboxes' own servers go on
// separate pools, so that a flood of user traffic (a dev server's polling,
// a notebook's WebSockets, proxied downloads) never holds the connections
// that terminals, commands and files need. Both pools are separate from
// any RPC transport: over a shared pool, proxied bytes would queue behind
// (or in front of) PTY and exec streams. They speak HTTP/1.1 only: one
// request per connection means one slow stream cannot head-of-line-block
// another, and WebSocket upgrades need it.
type Upstream struct {
	envd, user *http.Transport
	// inline takes the requests to sandboxes that need neither a body
	// streamed alongside the response nor an upgrade: most of them. Its
	// connections are per sandbox run and port and held by one request
	// at a time, so envd's and the user ports' stay apart there too.
	inline   *inlineTransport
	envdPort int
	// port says which sandbox port a request is for.
	port func(*http.Request) int
}

// NewUpstream returns an Upstream. envdPort is envd's port
// (wire.EnvdPort but in tests); port tells, for each request, the sandbox
// port it is for (not the port it is sent to, which may be an agent's).
func NewUpstream(envdPort int, port func(*http.Request) int) *Upstream {
	return &Upstream{envd: newTransport(), user: newTransport(), inline: newInlineTransport(), envdPort: envdPort, port: port}
}

// RoundTrip sends req on its port's pool. A connection that could not be
// made fails with a *DialError. When a sandbox's port other than envd's
// refused the connection, envd is asked to look for new servers before
// RoundTrip returns (kickEnvd), so that a retry finds a loopback server
// forwarded.
func (u *Upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	envd := u.port(req) == u.envdPort
	var resp *http.Response
	var err error
	switch {
	case inlineable(req):
		resp, err = u.inline.RoundTrip(req)
	case envd:
		return u.envd.RoundTrip(req)
	default:
		resp, err = u.user.RoundTrip(req)
	}
	if err != nil && !envd && errors.Is(err, syscall.ECONNREFUSED) {
		if sb, ok := sandboxOf(req.Context()); ok {
			u.kickEnvd(req.Context(), sb)
		}
	}
	return resp, err
}

// kickEnvdTimeout bounds a kick: envd answers it at once, or is not
// there to.
const kickEnvdTimeout = time.Second

// kickEnvd asks the envd of sandbox run sb to look for new loopback
// servers now (wire.EnvdScanPath): envd looks only every 30 s when idle,
// and a server that started listening on loopback since is reachable
// once envd forwards it. The answer (401 without a token) does not
// matter, nor does a failure: the caller's retries are what follow.
func (u *Upstream) kickEnvd(ctx context.Context, sb sandboxTarget) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), kickEnvdTimeout)
	defer cancel()
	envd := netip.AddrPortFrom(sb.addr.Addr(), uint16(u.envdPort))
	req, err := http.NewRequestWithContext(ToSandbox(ctx, sb.id, envd), http.MethodGet,
		"http://"+SandboxHost(sb.id, envd)+wire.EnvdScanPath, nil)
	if err != nil {
		return
	}
	resp, err := u.inline.RoundTrip(req)
	if err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// Close closes idle connections; requests in flight go on.
func (u *Upstream) Close() {
	u.envd.CloseIdleConnections()
	u.user.CloseIdleConnections()
	u.inline.closeIdle()
}

func newTransport() *http.Transport {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	return &http.Transport{
		Proxy:             nil, // never through an environment HTTP proxy
		DialContext:       Dial,
		Protocols:         protocols,
		ForceAttemptHTTP2: false,
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
		// Generous: every concurrent proxied request holds a connection.
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// No ResponseHeaderTimeout: long polls and slow handlers are
		// legitimate sandbox traffic; the client's context bounds them.
		// Bodies pass through as the sandbox encoded them.
		DisableCompression: true,
	}
}

// hopKey carries a request's *hop in its context: one value per request,
// for all the proxy and the upstream need to know of it.
type hopKey struct{}

// hop is what the proxy knows of a request on its way out.
type hop struct {
	// route is the control plane's Proxy's Route; zero from ToSandbox.
	route Route
	// toSandbox: the request goes straight to sandbox, not to an agent.
	toSandbox bool
	sandbox   sandboxTarget
	// direct and inst, when direct is set, tell whether the sandbox still
	// runs as inst (see stillThere).
	direct func(sandboxID string) (Instance, error)
	inst   Instance
}

type sandboxTarget struct {
	id   string
	addr netip.AddrPort
}

func hopOf(ctx context.Context) *hop {
	h, _ := ctx.Value(hopKey{}).(*hop)
	return h
}

// Instance is one run of a sandbox: where its ports answer, and a key
// that names the run (the sandbox's ID and its current init or VMM), by
// which the pools keep its connections (see ToSandbox).
type Instance struct {
	Addr netip.Addr
	Key  string
}

// InstanceKey is the Key of sandbox id's run whose init or VMM is pid.
func InstanceKey(id string, pid int) string { return id + "." + strconv.Itoa(pid) }

// ToSandbox marks ctx's request as one sent straight to port addr of the
// sandbox run key (Instance.Key): its connection closes without TIME_WAIT
// (see Dial), and is made to addr whatever the request's URL names. The
// URL's host must be SandboxHost(key, addr), which the pools key
// connections by: a run never gets a connection made to another. A VM's
// guest, or a sandbox's pid namespace, vanishes without closing its
// connections (destroyed, halted, hibernated), so idle ones stay pooled
// until they time out; the next sandbox on its network slot, or the same
// sandbox booted afresh or restored, would get them, to be reset.
func ToSandbox(ctx context.Context, key string, addr netip.AddrPort) context.Context {
	return context.WithValue(ctx, hopKey{}, &hop{toSandbox: true, sandbox: sandboxTarget{id: key, addr: addr}})
}

// SandboxHost is the URL host of a request to port addr of the sandbox
// run key (see ToSandbox): not a name anything resolves.
func SandboxHost(key string, addr netip.AddrPort) string {
	return key + ".sandbox:" + strconv.Itoa(int(addr.Port()))
}

func sandboxOf(ctx context.Context) (sandboxTarget, bool) {
	if h := hopOf(ctx); h != nil && h.toSandbox {
		return h.sandbox, true
	}
	return sandboxTarget{}, false
}

// DialError is a connection to an upstream that could not be made: nothing
// listens on the port (a server still starting), or its host is
// unreachable. The dialer creates it, so a failed round trip is
// classified by its type. It is errdefs.ErrUnreachable.
type DialError struct {
	Addr string
	Err  error
}

func (e *DialError) Error() string   { return fmt.Sprintf("connect to %s: %v", e.Addr, e.Err) }
func (e *DialError) Unwrap() []error { return []error{e.Err, errdefs.ErrUnreachable} }

// Dial connects to an agent or a sandbox, as an http.Transport's
// DialContext: to a sandbox when ctx says so (ToSandbox). A connection to a sandbox closes
// with a reset instead of a FIN (SO_LINGER 0), leaving no TIME_WAIT on the
// host: a sandbox server that closes every connection (HTTP/1.0, as
// python's http.server does) would otherwise leave one per request, and at
// a few hundred requests a second the ports to that server run out within
// a minute and every connect searches for a free one. The link is local (a
// veth) and a proxy closes only after a whole response, or to abort one.
func Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	sb, toSandbox := sandboxOf(ctx)
	if toSandbox {
		addr = sb.addr.String()
	}
	d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, &DialError{Addr: addr, Err: err}
	}
	if toSandbox {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	return c, nil
}

// UpstreamError is the category of a round trip that got no response: a
// *DialError or a broken connection is errdefs.ErrUnreachable (502), a
// timeout errdefs.ErrTimeout (504).
func UpstreamError(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, errdefs.ErrUnreachable):
		return err
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return fmt.Errorf("%w: %w", errdefs.ErrTimeout, err)
	default:
		return fmt.Errorf("%w: %w", errdefs.ErrUnreachable, err)
	}
}

// WriteUpstreamError answers a request whose round trip failed with err
// (already classified by UpstreamError) and returns the status. A refused
// connection is marked with wire.HeaderProxyError, so that a proxy in
// front (the control plane's, in front of an agent's) may retry it.
func WriteUpstreamError(w http.ResponseWriter, err error, msg string) int {
	var de *DialError
	if errors.As(err, &de) {
		w.Header().Set(wire.HeaderProxyError, wire.ProxyErrorDial)
	}
	status := errdefs.HTTPStatus(err)
	errdefs.WriteHTTP(w, status, msg)
	return status
}

// stillThere says whether ctx's request's sandbox still runs where the
// request goes, asking the in-process agent (hop.direct); without one the
// target is taken to stay.
func stillThere(ctx context.Context) bool {
	h := hopOf(ctx)
	if h == nil || h.direct == nil {
		return true
	}
	now, err := h.direct(h.route.SandboxID)
	return err == nil && now == h.inst
}

// retryTransport retries idempotent, bodiless requests while the sandbox's
// server refuses connections (a server that just started, not yet
// listening) — a *DialError from a direct dial, or an agent's 502 marked
// as one — with backoff, for at most window, and only while the sandbox
// is still there (stillThere): a refusal from a sandbox that is gone is
// final.
type retryTransport struct {
	base   http.RoundTripper
	window time.Duration
}

const (
	retryFirstDelay = 20 * time.Millisecond
	retryMaxDelay   = 400 * time.Millisecond
)

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.window <= 0 || !retryable(req) {
		return t.base.RoundTrip(req)
	}
	deadline := time.Now().Add(t.window)
	delay := retryFirstDelay
	for {
		resp, err := t.base.RoundTrip(req)
		if !refused(req, resp, err) {
			return resp, err
		}
		wait := min(delay, time.Until(deadline))
		if wait <= 0 || !stillThere(req.Context()) {
			return resp, err
		}
		if resp != nil {
			// Drain a little so the connection goes back to the pool.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
		}
		if err := sleep(req.Context(), wait); err != nil {
			return nil, err
		}
		delay = min(2*delay, retryMaxDelay)
	}
}

// refused says whether a round trip failed because the sandbox's port
// refused the connection, which a retry may cure: the agent says so on
// its 502, a direct request fails with a *DialError. A host agent that
// cannot be reached is not retried here.
func refused(req *http.Request, resp *http.Response, err error) bool {
	if err == nil {
		return resp.StatusCode == http.StatusBadGateway && resp.Header.Get(wire.HeaderProxyError) == wire.ProxyErrorDial
	}
	var de *DialError
	_, direct := sandboxOf(req.Context())
	return direct && errors.As(err, &de)
}

func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryable: sending the request again cannot do anything twice.
func retryable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	return req.Body == nil || req.Body == http.NoBody
}

// FullDuplex lets a proxied request's body keep flowing upstream after
// the response has begun. Without it Go's HTTP/1 server, on the first
// response write, drains and closes whatever of the request body the
// transport has not yet copied (the final chunk of a streamed Connect
// request, say); the transport's copy then fails and it closes the
// upstream connection in the middle of the response. HTTP/2 is full
// duplex already (ErrNotSupported, which is fine).
//
// The handler must call what it returns when it ends: that closes the
// request body, which a round trip that failed before reading it leaves
// open, and which the HTTP/1 server would otherwise read from under the
// next request's parsing ("invalid concurrent Body.Read call",
// golang/go#68560).
func FullDuplex(w http.ResponseWriter, r *http.Request) (end func()) {
	if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
		return func() {}
	}
	return func() { _ = r.Body.Close() }
}
