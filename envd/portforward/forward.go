package portforward

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

const (
	// dialTimeout bounds the connection to the loopback server, which is
	// local, so only a server that stopped accepting takes this long.
	dialTimeout = 5 * time.Second
	// maxAcceptDelay caps the back-off after a failed Accept (out of file
	// descriptors, say), as net/http does.
	maxAcceptDelay = time.Second
)

// forward is one forwarding listener and the connections it accepted. Its
// goroutines run until close.
type forward struct {
	ln     net.Listener
	target netip.AddrPort
	log    *slog.Logger
	ctx    context.Context // cancelled by close; bounds dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and each connection's goroutines

	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
}

// startForward serves ln, splicing every connection to target, until close
// or until ctx is done. It takes ownership of ln.
func startForward(ctx context.Context, ln net.Listener, target netip.AddrPort, log *slog.Logger) *forward {
	ctx, cancel := context.WithCancel(ctx)
	fw := &forward{
		ln:     ln,
		target: target,
		log:    log,
		ctx:    ctx,
		cancel: cancel,
		conns:  map[net.Conn]struct{}{},
	}
	fw.wg.Go(fw.serve)
	return fw
}

// close closes the listener and every connection, both ends, and waits for
// the goroutines to end. It is idempotent.
func (fw *forward) close() {
	fw.mu.Lock()
	conns := fw.conns
	fw.conns, fw.closed = nil, true
	fw.mu.Unlock()
	fw.cancel()
	fw.ln.Close()
	for c := range conns {
		c.Close()
	}
	fw.wg.Wait()
}

func (fw *forward) serve() {
	var delay time.Duration
	for fw.acceptOnce(&delay) {
	}
}

// acceptOnce accepts one connection and starts its splice. It reports false
// once the listener is closed.
func (fw *forward) acceptOnce(delay *time.Duration) (more bool) {
	defer func() {
		if r := recover(); r != nil {
			recoverLogged(fw.log, "port forward accept", r)
			more = fw.sleep(maxAcceptDelay)
		}
	}()
	c, err := fw.ln.Accept()
	if err != nil {
		if errors.Is(err, net.ErrClosed) || fw.ctx.Err() != nil {
			return false
		}
		*delay = min(max(2**delay, 5*time.Millisecond), maxAcceptDelay)
		fw.log.Warn("port forward accept failed", "listen", fw.ln.Addr().String(), "err", err, "retry_in", *delay)
		return fw.sleep(*delay)
	}
	*delay = 0
	if !fw.track(c) {
		c.Close()
		return false
	}
	fw.wg.Go(func() { fw.handle(c) })
	return true
}

// sleep waits d and reports whether the forward is still open.
func (fw *forward) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-fw.ctx.Done():
		return false
	}
}

// handle dials the loopback server for client and splices the two.
func (fw *forward) handle(client net.Conn) {
	defer recoverLog(fw.log, "port forward connection")
	defer fw.untrackClose(client)
	d := net.Dialer{Timeout: dialTimeout}
	upstream, err := d.DialContext(fw.ctx, "tcp", fw.target.String())
	if err != nil {
		// The server may have just gone away; the next scan stops the forward.
		fw.log.Debug("port forward dial failed", "target", fw.target, "err", err)
		return
	}
	if !fw.track(upstream) {
		upstream.Close()
		return
	}
	defer fw.untrackClose(upstream)
	splice(client, upstream, fw.log)
}

// track registers c so close can close it; false if the forward is closed.
func (fw *forward) track(c net.Conn) bool {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.closed {
		return false
	}
	fw.conns[c] = struct{}{}
	return true
}

func (fw *forward) untrackClose(c net.Conn) {
	fw.mu.Lock()
	delete(fw.conns, c)
	fw.mu.Unlock()
	c.Close()
}

// splice copies a to b and b to a until both directions end. Between two
// *net.TCPConn, io.Copy uses splice(2), so data does not pass through user
// space.
func splice(a, b net.Conn, log *slog.Logger) {
	var wg sync.WaitGroup
	wg.Go(func() { pipe(b, a, log) })
	pipe(a, b, log)
	wg.Wait()
}

// pipe copies src to dst. At src's EOF it half-closes dst, so its peer sees
// EOF while the other direction keeps flowing; on an error (a reset, or close
// from the forward) it closes both, which also ends the other direction.
func pipe(dst, src net.Conn, log *slog.Logger) {
	ok := false
	defer func() {
		if r := recover(); r != nil {
			recoverLogged(log, "port forward copy", r)
		}
		if !ok {
			dst.Close()
			src.Close()
		}
	}()
	if _, err := io.Copy(dst, src); err != nil {
		return
	}
	cw, canHalfClose := dst.(interface{ CloseWrite() error })
	ok = canHalfClose && cw.CloseWrite() == nil
}
