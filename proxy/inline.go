package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"time"
)

// inlineTransport makes round trips straight to sandboxes in the calling
// goroutine, for the requests that allow it (inlineable): bodiless,
// idempotent, no protocol upgrade. http.Transport runs two goroutines per
// connection (one writes requests, one reads responses and watches the
// idle connection), so each of its round trips hands the request to one
// and the response back from the other, and polls the socket once more
// after every response; against a sandbox server that costs nothing
// (envd's /health) those hand-offs were most of the proxy's own CPU per
// request. Here the caller writes the request, reads the response's
// header, and the response body hands the connection back to the pool
// when it reaches its end: one write and one read per request.
//
// What http.Transport does for these requests it does too: HTTP/1.1
// keep-alive per sandbox run and port (the URL host, see ToSandbox),
// 1xx responses reported through httptrace's Got1xxResponse, a bound on
// response headers, a request on a reused connection that the server
// had closed while idle sent again once on a new connection (the
// requests are idempotent), the request's context ending the round trip
// and the body's reading, idle connections closed after idleTimeout.
// Unlike http.Transport, nothing is read from an idle connection: one
// that the server closes is noticed when it is next used (or times out),
// and bytes its server sends while it is idle would be read as the next
// request's answer. Such a connection only ever carries answers from
// that one server of that one sandbox, which chooses its answers anyway.
type inlineTransport struct {
	idleTimeout    time.Duration
	maxIdlePerHost int

	mu   sync.Mutex // guards idle
	idle map[string][]*inlineConn
}

// maxResponseHeader bounds a response's header (and its 1xx responses'
// that no one asked to see), as http.Transport's default does: a
// sandbox's server is untrusted.
const maxResponseHeader = 10 << 20

func newInlineTransport() *inlineTransport {
	return &inlineTransport{idleTimeout: 90 * time.Second, maxIdlePerHost: 1024, idle: make(map[string][]*inlineConn)}
}

// inlineable says whether req can take the inline round trip: it goes
// straight to a sandbox, has no body to stream while the response comes
// (Connect's bidirectional streams need both ways at once), does not ask
// to switch protocols (a WebSocket needs http.Transport's
// read-write body), and may be sent twice.
func inlineable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	if _, upgrade := req.Header["Upgrade"]; upgrade {
		return false
	}
	_, ok := sandboxOf(req.Context())
	return ok && req.URL.Scheme == "http"
}

// RoundTrip sends req, which must be inlineable, on an idle connection to
// its URL host or a new one. A connection that cannot be made fails with
// a *DialError.
func (t *inlineTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	key := req.URL.Host
	c := t.get(key)
	if c != nil {
		resp, err := c.roundTrip(req)
		if err == nil || !c.unanswered || req.Context().Err() != nil {
			return resp, err
		}
		// The server closed the idle connection before the request
		// reached it (or as it did): once more, on a new one.
	}
	c, err := t.dial(req.Context(), key)
	if err != nil {
		return nil, err
	}
	return c.roundTrip(req)
}

// get takes the most recently used idle connection to key, or nil.
func (t *inlineTransport) get(key string) *inlineConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	conns := t.idle[key]
	if len(conns) == 0 {
		return nil
	}
	c := conns[len(conns)-1]
	conns[len(conns)-1] = nil
	if len(conns) == 1 {
		delete(t.idle, key)
	} else {
		t.idle[key] = conns[:len(conns)-1]
	}
	c.timer.Stop()
	return c
}

func (t *inlineTransport) dial(ctx context.Context, key string) (*inlineConn, error) {
	nc, err := Dial(ctx, "tcp", key) // the address comes from ctx (ToSandbox)
	if err != nil {
		return nil, err
	}
	c := &inlineConn{t: t, key: key, conn: nc}
	c.lr = &limitedReader{r: nc}
	c.br = bufio.NewReader(c.lr)
	c.bw = bufio.NewWriter(nc)
	c.timer = time.AfterFunc(math.MaxInt64, c.expire)
	return c, nil
}

// put makes c idle, or closes it when key has enough idle connections.
func (t *inlineTransport) put(c *inlineConn) {
	t.mu.Lock()
	conns := t.idle[c.key]
	if len(conns) >= t.maxIdlePerHost {
		t.mu.Unlock()
		c.close()
		return
	}
	t.idle[c.key] = append(conns, c)
	c.timer.Reset(t.idleTimeout)
	t.mu.Unlock()
}

// remove takes c out of the idle connections; false when it was not idle.
func (t *inlineTransport) remove(c *inlineConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	conns := t.idle[c.key]
	for i, ic := range conns {
		if ic == c {
			conns = append(conns[:i], conns[i+1:]...)
			if len(conns) == 0 {
				delete(t.idle, c.key)
			} else {
				t.idle[c.key] = conns
			}
			return true
		}
	}
	return false
}

// closeIdle closes every idle connection.
func (t *inlineTransport) closeIdle() {
	t.mu.Lock()
	idle := t.idle
	t.idle = make(map[string][]*inlineConn)
	t.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
			c.timer.Stop()
			c.close()
		}
	}
}

// inlineConn is one HTTP/1.1 connection to a sandbox's port, used by one
// request at a time.
type inlineConn struct {
	t     *inlineTransport
	key   string // the URL host it serves
	conn  net.Conn
	lr    *limitedReader // between conn and br: bounds a response's header
	br    *bufio.Reader
	bw    *bufio.Writer
	timer *time.Timer // closes it when idle too long
	// unanswered: the last round trip failed before any response began,
	// so the server may not have seen the request.
	unanswered bool
}

func (c *inlineConn) expire() {
	if c.t.remove(c) {
		c.close()
	}
}

func (c *inlineConn) close() { _ = c.conn.Close() }

// abandonedAt is the deadline that ends a connection's blocked reads and
// writes at once (the request's context ended).
var abandonedAt = time.Unix(1, 0)

// roundTrip writes req and reads its response's header. On success the
// connection belongs to the response's body, which returns it to the
// pool at its end; on failure it is closed.
func (c *inlineConn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(abandonedAt) })
	resp, err := c.exchange(req)
	if err != nil {
		stop()
		c.close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	b := &inlineBody{c: c, ctx: ctx, body: resp.Body, stop: stop, reuse: !resp.Close && !req.Close}
	if resp.Body == http.NoBody {
		// The connection is free again before the response is used.
		b.end(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

func (c *inlineConn) exchange(req *http.Request) (*http.Response, error) {
	c.unanswered = true
	if err := req.Write(c.bw); err != nil {
		return nil, err
	}
	if err := c.bw.Flush(); err != nil {
		return nil, err
	}
	trace := httptrace.ContextClientTrace(req.Context())
	c.lr.n = maxResponseHeader
	for {
		if _, err := c.br.Peek(1); err != nil {
			return nil, err
		}
		c.unanswered = false
		resp, err := http.ReadResponse(c.br, req)
		if errors.Is(err, errHeaderTooLarge) {
			return nil, fmt.Errorf("response header larger than %d bytes", maxResponseHeader)
		}
		if err != nil {
			return nil, err
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, errors.New("101 switching protocols to a request without Upgrade")
		case resp.StatusCode >= 100 && resp.StatusCode < 200:
			if trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
					return nil, err
				}
				c.lr.n = maxResponseHeader // the caller has seen it: a new bound
			}
			continue
		}
		c.lr.n = math.MaxInt64
		return resp, nil
	}
}

// inlineBody is a response's body: at its end the connection goes back to
// the pool, when it may; closed before, the connection closes.
type inlineBody struct {
	c     *inlineConn
	ctx   context.Context // the request's
	body  io.ReadCloser
	stop  func() bool // ends the request context's hold on the connection
	reuse bool        // keep-alive: neither side asked to close
	done  atomic.Bool
}

func (b *inlineBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.end(true)
	} else if err != nil {
		b.end(false)
		if ctxErr := b.ctx.Err(); ctxErr != nil {
			err = ctxErr // what ended the read
		}
	}
	return n, err
}

func (b *inlineBody) Close() error {
	b.end(false)
	return nil
}

// end gives the connection back (complete: the body was read to its end)
// or closes it; once.
func (b *inlineBody) end(complete bool) {
	if !b.done.CompareAndSwap(false, true) {
		return
	}
	// stop is false when the request's context ended first and its
	// deadline may be on the connection.
	// Bytes after the response's end are no answer to anything the
	// connection will send: it cannot be trusted with another request.
	if b.stop() && complete && b.reuse && b.c.br.Buffered() == 0 {
		b.c.t.put(b.c)
		return
	}
	b.c.close()
}

// errHeaderTooLarge is a response header that passed maxResponseHeader.
var errHeaderTooLarge = errors.New("response header too large")

// limitedReader reads from r, failing with errHeaderTooLarge once n bytes
// have been read; roundTrip sets n for a header and lifts it for a body.
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
