package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Connections a protocol upgrade hands to the proxy (a sandbox's
// WebSockets: a notebook's kernels, a dev server's hot reload) are the
// http.Server's no longer: its Shutdown neither waits for nor closes them.
// The proxy keeps a set of them so that Shutdown can end them.
//
// The proxy relays an upgraded connection's bytes as they come, and does
// not speak the protocol. For a WebSocket, saying "going away" (1001)
// takes one thing of it: where frames end in what the sandbox sends
// (frameTracker reads their headers and counts the rest), so that a close
// frame goes out between two frames and never inside one. Nothing the
// sandbox sends after that reaches the client (no data frame may follow a
// close frame). The sandbox is not told: it sees the client's answer to
// the close frame, if any, then its connection close, as when any client
// leaves. Where a frame never ends (the sandbox is silent halfway through
// one) or the stream is not one the tracker understands, or the protocol
// is not WebSocket, the connection is closed without a close frame.

// closeGrace is how long Shutdown lets upgraded connections end by
// themselves once every WebSocket has its close frame (the client
// answers, the sandbox hangs up) before it closes those that remain.
const closeGrace = time.Second

// goingAwayReason is the reason of the close frame Shutdown sends.
const goingAwayReason = "proxy shutting down: reconnect"

// errShuttingDown ends the requests of upgrades Shutdown ends: one that
// has not been upgraded yet is answered 503 (proxyFailed).
var errShuttingDown = errors.New("the proxy is shutting down")

// upgrades is the proxy's requests that ask for a protocol upgrade, from
// their start until their handler returns.
type upgrades struct {
	mu      sync.Mutex // guards open and closing
	open    map[*upgrade]struct{}
	closing bool
	// handlers counts the handlers of open upgrades.
	handlers sync.WaitGroup
}

// upgrade is one request that asked for a protocol upgrade.
type upgrade struct {
	// cancel ends the request: ReverseProxy then closes the connection
	// to the agent, its copying ends, and it closes the client's.
	cancel context.CancelCauseFunc
	// websocket: the request asked for "Upgrade: websocket".
	websocket bool
	conn      atomic.Pointer[upgradedConn] // the client's, once hijacked
}

// upgradeRequested says whether h asks for a protocol upgrade, as
// ReverseProxy reads it: Connection names "upgrade".
func upgradeRequested(h http.Header) bool {
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// begin registers r, which asks for an upgrade, and returns its context
// (r's, cancelled by Shutdown) and release, which its handler defers;
// ok is false once Shutdown has begun.
func (s *upgrades) begin(r *http.Request) (u *upgrade, ctx context.Context, release func(), ok bool) {
	ctx, cancel := context.WithCancelCause(r.Context())
	u = &upgrade{cancel: cancel, websocket: strings.EqualFold(r.Header.Get("Upgrade"), "websocket")}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		cancel(errShuttingDown)
		return nil, nil, nil, false
	}
	if s.open == nil {
		s.open = make(map[*upgrade]struct{})
	}
	s.open[u] = struct{}{}
	s.handlers.Add(1)
	return u, ctx, func() {
		cancel(nil)
		s.mu.Lock()
		delete(s.open, u)
		s.mu.Unlock()
		s.handlers.Done()
	}, true
}

// shutdown refuses new upgrades; has every open WebSocket say going away
// at its next frame boundary; gives them closeGrace (or until ctx ends)
// to end; ends the rest; and waits for their handlers until ctx ends.
func (s *upgrades) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	open := make([]*upgrade, 0, len(s.open))
	for u := range s.open {
		open = append(open, u)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(done)
	}()
	said := 0
	for _, u := range open {
		if c := u.conn.Load(); c != nil && u.websocket {
			go c.goAway()
			said++
			continue
		}
		u.cancel(errShuttingDown) // not upgraded yet, or not a WebSocket: nothing to say
	}
	if said > 0 {
		grace := time.NewTimer(closeGrace)
		defer grace.Stop()
		select {
		case <-done:
		case <-grace.C:
		case <-ctx.Done():
		}
	}
	for _, u := range open {
		u.cancel(errShuttingDown)
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("proxy: close upgraded connections: %w", ctx.Err())
	}
}

// Shutdown ends the connections protocol upgrades handed to the proxy,
// which the http.Server's Shutdown does not, and refuses new upgrades
// (503). A WebSocket gets a close frame with status 1001 (going away) at
// the next boundary between the sandbox's frames; each connection is
// closed within a second, or when ctx ends. It returns once their
// handlers have returned, or with ctx's error.
func (p *Proxy) Shutdown(ctx context.Context) error {
	return p.upgrades.shutdown(ctx)
}

// upgradeWriter hands ReverseProxy the client's connection of an upgrade
// wrapped, so that Shutdown can end it.
type upgradeWriter struct {
	http.ResponseWriter
	u *upgrade
}

func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	c := &upgradedConn{Conn: conn}
	w.u.conn.Store(c)
	return c, brw, nil
}

func (w *upgradeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// upgradedConn is the client's connection of an upgrade. ReverseProxy
// writes to it what the sandbox sends (after the 101 response, which it
// writes through the hijacked bufio.Writer): frames, for a WebSocket.
type upgradedConn struct {
	net.Conn
	// away: Shutdown has begun; the close frame goes out at the next
	// frame boundary.
	away atomic.Bool

	mu sync.Mutex // guards frames and ended; held across a write
	// frames follows the frames written so far.
	frames frameTracker
	// ended: a close frame went out, ours or the sandbox's; what comes
	// after is dropped.
	ended bool
}

func (c *upgradedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return len(p), nil
	}
	if !c.away.Load() {
		n, err := c.Conn.Write(p)
		c.frames.feed(p[:n])
		if err == nil && c.away.Load() {
			c.sayGoingAwayLocked()
		}
		return n, err
	}
	// Going away: finish the frame in flight, then close.
	k := c.frames.untilBoundary(p)
	n, err := c.Conn.Write(p[:k])
	c.frames.feed(p[:n])
	if err != nil {
		return n, err
	}
	c.sayGoingAwayLocked()
	return len(p), nil
}

// goAway has the close frame sent now if no frame is in flight, else at
// the end of the one that is.
func (c *upgradedConn) goAway() {
	c.away.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sayGoingAwayLocked()
}

// sayGoingAwayLocked writes the close frame if the stream is at a frame
// boundary and no close frame has gone out. A stream the tracker lost,
// or that the sandbox closed, gets none: Shutdown closes it.
func (c *upgradedConn) sayGoingAwayLocked() {
	if c.ended || !c.frames.atBoundary() {
		return
	}
	c.ended = true
	if c.frames.closed {
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(closeGrace))
	_, _ = c.Conn.Write(closeFrame(1001, goingAwayReason))
}

// closeFrame is an unmasked close frame (a server's) with code and
// reason; the reason must fit in a control frame (123 bytes).
func closeFrame(code uint16, reason string) []byte {
	b := make([]byte, 4, 4+len(reason))
	b[0] = 0x80 | opClose // FIN
	b[1] = byte(2 + len(reason))
	binary.BigEndian.PutUint16(b[2:], code)
	return append(b, reason...)
}

const opClose = 0x8

// frameTracker follows the frame boundaries of a WebSocket byte stream
// (RFC 6455 section 5.2) as it goes by, without holding any of it: it
// reads each frame's header (2 to 14 bytes) and counts its payload. Its
// zero value is at the start of a stream.
type frameTracker struct {
	head    [14]byte
	headLen int    // bytes of the current header read so far
	payload uint64 // payload bytes of the current frame still to come
	// closed: a close frame went by (the sandbox ended the connection).
	closed bool
	// broken: a header no valid stream has (a 64-bit length with its
	// top bit set); nothing is known of the rest.
	broken bool
}

// headerLen is the length of a header whose second byte is b1.
func headerLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 { // masked
		n += 4
	}
	return n
}

// atBoundary says whether the stream so far ends with a whole frame.
func (f *frameTracker) atBoundary() bool {
	return !f.broken && f.headLen == 0 && f.payload == 0
}

// feed moves past p.
func (f *frameTracker) feed(p []byte) {
	for len(p) > 0 && !f.broken {
		if f.payload > 0 {
			n := min(uint64(len(p)), f.payload)
			f.payload -= n
			p = p[n:]
			continue
		}
		f.head[f.headLen] = p[0]
		f.headLen++
		p = p[1:]
		if f.headLen < 2 || f.headLen < headerLen(f.head[1]) {
			continue
		}
		f.endHeader()
	}
}

// endHeader takes the length of the header just read.
func (f *frameTracker) endHeader() {
	h := f.head[:f.headLen]
	f.headLen = 0
	switch n := h[1] & 0x7f; n {
	case 126:
		f.payload = uint64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		f.payload = binary.BigEndian.Uint64(h[2:])
		if f.payload>>63 != 0 {
			f.broken = true
		}
	default:
		f.payload = uint64(n)
	}
	if h[0]&0x0f == opClose {
		f.closed = true
	}
}

// untilBoundary is how many bytes of p, written next, end the frame in
// flight: 0 at a boundary, len(p) when the frame goes on past p (or the
// tracker is broken).
func (f *frameTracker) untilBoundary(p []byte) int {
	if f.broken {
		return len(p)
	}
	g := *f
	n := 0
	for n < len(p) && !g.atBoundary() {
		if g.payload > 0 {
			k := min(uint64(len(p)-n), g.payload)
			g.payload -= k
			n += int(k)
			continue
		}
		g.feed(p[n : n+1])
		n++
	}
	if g.broken {
		return len(p)
	}
	return n
}
