package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// newTransport is the proxy's own connection pool to agents.
//
// It is separate from the control plane's RPC transport to agents: with a
// shared pool, a flood of proxied downloads would hold every idle
// connection (and, over HTTP/2, share one connection's flow-control window
// and TCP stream), so PTY and exec streams would queue behind user
// traffic. It speaks HTTP/1.1 only: one request per connection means one
// slow sandbox stream cannot head-of-line-block another, and WebSocket
// upgrades (which ReverseProxy forwards as HTTP/1.1 Upgrade) need it.
func newTransport() *http.Transport {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	return &http.Transport{
		Proxy:             nil, // never through an environment HTTP proxy
		DialContext:       dial,
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

// dial connects to an agent, or to a sandbox for a direct request. A
// connection to a sandbox closes with a reset instead of a FIN (SO_LINGER
// 0), leaving no TIME_WAIT on the host: a sandbox server that closes
// every connection (HTTP/1.0, as python's http.server does) would
// otherwise leave one per request, and at a few hundred requests a second
// the ports to that server run out within a minute and every connect
// searches for a free one. The link is local (a veth) and the proxy
// closes only after a whole response, or to abort one.
func dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if _, direct := ctx.Value(directKey{}).(netip.AddrPort); direct {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	return c, nil
}

// retryTransport retries idempotent, bodiless requests while the agent
// reports that the sandbox's server refused the connection (a server that
// just started, not yet listening), with backoff, for at most window.
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
		refused := err == nil && agentDialFailure(resp) || err != nil && directDialFailure(req, err)
		if !refused {
			return resp, err
		}
		wait := min(delay, time.Until(deadline))
		if wait <= 0 {
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

// agentDialHeader is the agent's mark on a 502 that means nothing listens
// on the sandbox's port yet (agent.DialErrorHeader; the two processes share
// only this wire fact).
const agentDialHeader = "Roost-Proxy-Error"

// agentDialFailure says whether resp is the agent's answer that it could not
// connect to the sandbox's port, which a retry may cure.
func agentDialFailure(resp *http.Response) bool {
	return resp.StatusCode == http.StatusBadGateway && resp.Header.Get(agentDialHeader) == "dial"
}

// directDialFailure says whether err is a refused connection to a
// sandbox reached directly (Target.Direct), which a retry may cure.
func directDialFailure(req *http.Request, err error) bool {
	if _, ok := req.Context().Value(directKey{}).(netip.AddrPort); !ok {
		return false
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// errorStatus classifies a failed round trip to an agent: a timeout is 504,
// anything else (refused, reset, unreachable) 502.
func errorStatus(err error) int {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}
