package portforward

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// These tests run a forward between two loopback ports, which needs no
// privileges; e2e_linux_test.go runs the whole Forwarder in a namespace.

// testServer is a TCP server a test owns; Close ends all its goroutines.
type testServer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex // guards conns
	conn map[net.Conn]struct{}
}

func serve(t *testing.T, ln net.Listener, handle func(net.Conn)) *testServer {
	t.Helper()
	s := &testServer{ln: ln, conn: map[net.Conn]struct{}{}}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conn[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(s.Close)
	return s
}

func listen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	return ln
}

func (s *testServer) Port() uint16 { return uint16(s.ln.Addr().(*net.TCPAddr).Port) }

func (s *testServer) AddrPort() netip.AddrPort { return s.ln.Addr().(*net.TCPAddr).AddrPort() }

// CloseListener stops accepting but leaves open connections alone.
func (s *testServer) CloseListener() { s.ln.Close() }

func (s *testServer) Close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conn {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// echo writes back what it reads, and half-closes when the client does.
func echo(c net.Conn) {
	if _, err := io.Copy(c, c); err == nil {
		c.(*net.TCPConn).CloseWrite()
	}
	io.Copy(io.Discard, c)
}

// replyAtEOF reads until the client half-closes, then answers with the
// length and SHA-256 of what it read.
func replyAtEOF(c net.Conn) {
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return
	}
	c.Write(h.Sum([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}))
}

func dial(t *testing.T, addr netip.AddrPort) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 10*time.Second)
	if err != nil {
		t.Fatalf("dial %v: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(time.Minute))
	return c.(*net.TCPConn)
}

func startTestForward(t *testing.T, target netip.AddrPort) *forward {
	t.Helper()
	fw := startForward(t.Context(), listen(t, "tcp4", "127.0.0.1:0"), target, slog.New(slog.NewTextHandler(t.Output(), nil)))
	t.Cleanup(fw.close)
	return fw
}

func (fw *forward) addr() netip.AddrPort { return fw.ln.Addr().(*net.TCPAddr).AddrPort() }

func (fw *forward) numConns() int {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return len(fw.conns)
}

// checkEcho sends msg over c and expects it back.
func checkEcho(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

// checkLargeTransfer sends size random bytes through an echo server and
// checks that the same bytes come back, in both directions at once.
func checkLargeTransfer(t *testing.T, c *net.TCPConn, size int) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() {
		if _, werr = c.Write(data); werr == nil {
			werr = c.CloseWrite()
		}
	})
	h := sha256.New()
	n, err := io.Copy(h, c)
	wg.Wait()
	if werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if want := sha256.Sum256(data); n != int64(size) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("got %d bytes back with a different checksum, sent %d", n, size)
	}
}

// checkHalfClose half-closes c to a replyAtEOF server and reads its answer.
func checkHalfClose(t *testing.T, c *net.TCPConn) {
	t.Helper()
	msg := []byte("the request, then EOF")
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read reply after half-close: %v", err)
	}
	sum := sha256.Sum256(msg)
	if want := append([]byte{0, 0, 0, byte(len(msg))}, sum[:]...); !bytes.Equal(got, want) {
		t.Fatalf("reply %x, want %x", got, want)
	}
}

func TestForwardEcho(t *testing.T) {
	srv := serve(t, listen(t, "tcp4", "127.0.0.1:0"), echo)
	fw := startTestForward(t, srv.AddrPort())
	c := dial(t, fw.addr())
	checkEcho(t, c, "hello through the forward")
	checkEcho(t, c, "and again")
}

func TestForwardLargeTransfer(t *testing.T) {
	srv := serve(t, listen(t, "tcp4", "127.0.0.1:0"), echo)
	fw := startTestForward(t, srv.AddrPort())
	checkLargeTransfer(t, dial(t, fw.addr()), 32<<20)
	waitNoConns(t, fw)
}

func TestForwardHalfClose(t *testing.T) {
	srv := serve(t, listen(t, "tcp4", "127.0.0.1:0"), replyAtEOF)
	fw := startTestForward(t, srv.AddrPort())
	checkHalfClose(t, dial(t, fw.addr()))
	waitNoConns(t, fw)
}

// TestForwardServerHalfClose checks the other direction: the server
// half-closes and still reads what the client sends afterwards.
func TestForwardServerHalfClose(t *testing.T) {
	got := make(chan string, 1)
	srv := serve(t, listen(t, "tcp4", "127.0.0.1:0"), func(c net.Conn) {
		io.WriteString(c, "banner")
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		got <- string(b)
	})
	fw := startTestForward(t, srv.AddrPort())
	c := dial(t, fw.addr())
	banner, err := io.ReadAll(c)
	if err != nil || string(banner) != "banner" {
		t.Fatalf("read banner = %q, %v", banner, err)
	}
	io.WriteString(c, "after the server's EOF")
	c.CloseWrite()
	if s := <-got; s != "after the server's EOF" {
		t.Fatalf("server read %q", s)
	}
	waitNoConns(t, fw)
}

func TestForwardIPv6Target(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	srv := serve(t, ln, echo)
	fw := startTestForward(t, srv.AddrPort())
	checkEcho(t, dial(t, fw.addr()), "over ::1")
}

// TestForwardCloseEndsConnections checks that close cuts open connections
// and stops accepting.
func TestForwardCloseEndsConnections(t *testing.T) {
	srv := serve(t, listen(t, "tcp4", "127.0.0.1:0"), echo)
	fw := startTestForward(t, srv.AddrPort())
	c := dial(t, fw.addr())
	checkEcho(t, c, "before close")

	fw.close()
	fw.close() // idempotent
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after close: no error")
	}
	if c, err := net.Dial("tcp", fw.addr().String()); err == nil {
		c.Close()
		t.Fatal("dial after close succeeded")
	}
}

// TestForwardDialFailure checks that a client is let go when the server is
// gone before the next scan notices.
func TestForwardDialFailure(t *testing.T) {
	ln := listen(t, "tcp4", "127.0.0.1:0")
	target := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	fw := startTestForward(t, target)
	c := dial(t, fw.addr())
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read: no error, want EOF or reset")
	}
	waitNoConns(t, fw)
	// The forward still accepts.
	c = dial(t, fw.addr())
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("second read: no error")
	}
}

// TestForwardClientReset checks that an aborted client tears down the
// server side too.
func TestForwardClientReset(t *testing.T) {
	serverDone := make(chan error, 1)
	srv := serve(t, listen(t, "tcp4", "127.0.0.1:0"), func(c net.Conn) {
		_, err := io.Copy(io.Discard, c)
		serverDone <- err
	})
	fw := startTestForward(t, srv.AddrPort())
	c := dial(t, fw.addr())
	io.WriteString(c, "partial")
	c.SetLinger(0)
	c.Close()
	select {
	case <-serverDone:
	case <-time.After(30 * time.Second):
		t.Fatal("server side stayed open after the client reset")
	}
	waitNoConns(t, fw)
}

func TestSplicePanicRecovered(t *testing.T) {
	var logs syncBuffer
	a, b := net.Pipe()
	defer b.Close()
	pipe(panicConn{a}, panicConn{a}, slog.New(slog.NewTextHandler(&logs, nil)))
	if _, err := b.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("write after recovered panic = %v, want the pipe closed", err)
	}
	if !bytes.Contains([]byte(logs.String()), []byte("recovered from panic")) {
		t.Errorf("panic not logged: %s", logs.String())
	}
}

type panicConn struct{ net.Conn }

func (panicConn) Read([]byte) (int, error) { panic("boom") }

func waitNoConns(t *testing.T, fw *forward) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for fw.numConns() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still tracked", fw.numConns())
		}
		time.Sleep(time.Millisecond)
	}
}

func BenchmarkForward(b *testing.B) {
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	defer ln.Close()
	fln, _ := net.Listen("tcp4", "127.0.0.1:0")
	fw := startForward(b.Context(), fln, ln.Addr().(*net.TCPAddr).AddrPort(), slog.New(slog.DiscardHandler))
	defer fw.close()
	c, err := net.Dial("tcp", fln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		c.Write(buf)
	}
}
