package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// frame is an unmasked WebSocket frame (a server's) with op and payload,
// its length in the shortest form or, with long, in the 64-bit one.
func frame(op byte, payload []byte, long bool) []byte {
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case long:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// TestFrameTracker feeds streams of frames in every split into two
// pieces: the boundaries it reports are the frames' ends, whatever the
// pieces.
func TestFrameTracker(t *testing.T) {
	masked := []byte{0x82, 0x80 | 3, 1, 2, 3, 4, 'a', 'b', 'c'} // a client's frame: mask key, then payload
	for _, tc := range []struct {
		name   string
		frames [][]byte
		closed bool
	}{
		{"empty", [][]byte{frame(0x1, nil, false)}, false},
		{"small", [][]byte{frame(0x1, []byte("hello"), false), frame(0x2, []byte{0, 1, 2}, false)}, false},
		{"16-bit length", [][]byte{frame(0x2, bytes.Repeat([]byte{7}, 126), false), frame(0x2, bytes.Repeat([]byte{7}, 300), false)}, false},
		{"64-bit length", [][]byte{frame(0x2, bytes.Repeat([]byte{7}, 70000), false), frame(0x2, []byte("x"), true)}, false},
		{"fragments and a ping between", [][]byte{{0x01, 2, 'a', 'b'}, frame(0x9, []byte("p"), false), {0x80, 1, 'c'}}, false},
		{"masked", [][]byte{masked, frame(0x1, []byte("x"), false)}, false},
		{"close", [][]byte{frame(0x1, []byte("bye"), false), frame(opClose, []byte{3, 232}, false)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := bytes.Join(tc.frames, nil)
			ends := map[int]bool{0: true}
			at := 0
			for _, f := range tc.frames {
				at += len(f)
				ends[at] = true
			}
			nextEnd := make([]int, len(stream)+1) // the first frame end at or after each offset
			for i := len(stream); i >= 0; i-- {
				nextEnd[i] = i
				if !ends[i] {
					nextEnd[i] = nextEnd[i+1]
				}
			}
			for split := range len(stream) + 1 {
				var f frameTracker
				f.feed(stream[:split])
				if got := f.atBoundary(); got != ends[split] {
					t.Fatalf("after %d bytes: at a boundary %v, want %v", split, got, ends[split])
				}
				if got, want := f.untilBoundary(stream[split:]), nextEnd[split]-split; got != want {
					t.Fatalf("after %d bytes: %d to the boundary, want %d", split, got, want)
				}
				f.feed(stream[split:])
				if !f.atBoundary() || f.closed != tc.closed {
					t.Fatalf("split at %d: at the end boundary %v, closed %v; want true, %v", split, f.atBoundary(), f.closed, tc.closed)
				}
			}
		})
	}
	t.Run("broken", func(t *testing.T) {
		var f frameTracker
		f.feed([]byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 'x'})
		if f.atBoundary() || !f.broken || f.untilBoundary([]byte("more")) != 4 {
			t.Fatalf("a 64-bit length with its top bit set: %+v", f)
		}
	})
	t.Run("past the chunk", func(t *testing.T) {
		var f frameTracker
		f.feed(frame(0x2, []byte("0123456789"), false)[:5])
		if got := f.untilBoundary([]byte("456")); got != 3 {
			t.Fatalf("a frame going on past the chunk: %d, want 3", got)
		}
	})
}

// FuzzFrameTracker: whatever a sandbox sends, and however it is split,
// the tracker agrees with itself fed at once, never panics, and
// untilBoundary stays within the chunk and ends at a boundary.
func FuzzFrameTracker(f *testing.F) {
	f.Add(append(frame(0x1, []byte("hello"), false), frame(0x2, bytes.Repeat([]byte{1}, 200), false)...), 3)
	f.Add([]byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0, 2, 'a', 'b', 0x88, 0}, 7)
	f.Add([]byte{0x82, 0xfe, 0, 4, 1, 2, 3, 4, 'a'}, 1)
	f.Fuzz(func(t *testing.T, stream []byte, split int) {
		if split < 0 || split > len(stream) {
			split = len(stream) / 2
		}
		var whole, pieces frameTracker
		whole.feed(stream)
		pieces.feed(stream[:split])
		n := pieces.untilBoundary(stream[split:])
		if n < 0 || n > len(stream)-split {
			t.Fatalf("untilBoundary %d of %d bytes", n, len(stream)-split)
		}
		probe := pieces
		probe.feed(stream[split : split+n])
		if n < len(stream)-split && !probe.atBoundary() {
			t.Fatalf("untilBoundary %d does not end at a boundary", n)
		}
		pieces.feed(stream[split:])
		if whole != pieces {
			t.Fatalf("fed at once %+v, in two pieces %+v", whole, pieces)
		}
	})
}

// wsAccept answers a WebSocket upgrade by hand and returns the raw
// connection, so that a test can write frames in pieces, as a sandbox's
// server may.
func wsAccept(t *testing.T, w http.ResponseWriter, r *http.Request) (net.Conn, *bufio.ReadWriter) {
	sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Error(err)
		return nil, nil
	}
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(sum[:]))
	if err := brw.Flush(); err != nil {
		t.Error(err)
	}
	return conn, brw
}

// dialThrough opens a WebSocket to the backend on port through the
// stack's proxy.
func dialThrough(t *testing.T, ctx context.Context, s *stack, port int) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(ctx, fmt.Sprintf("ws%s/proxy/%s/%d/ws", strings.TrimPrefix(s.srv.URL, "http"), sbx, port), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// TestShutdownWebSocket: a proxied WebSocket gets a close frame with
// 1001 when the proxy shuts down, and the sandbox's server sees its
// client leave; a new upgrade is refused.
func TestShutdownWebSocket(t *testing.T) {
	s := newStack(t, Config{})
	serverDone := make(chan error, 1)
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(context.Background())
			if err != nil {
				serverDone <- err
				return
			}
			if err := c.Write(context.Background(), typ, msg); err != nil {
				serverDone <- err
				return
			}
		}
	}))
	t.Cleanup(ws.Close)
	port := portOf(t, ws.Listener.Addr())
	s.add(sbx, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a hang guard
	defer cancel()
	c := dialThrough(t, ctx, s, port)
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || string(got) != "hi" {
		t.Fatalf("echo %q, %v", got, err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- s.proxy.Shutdown(ctx) }()
	_, _, err := c.Read(ctx)
	if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
		t.Fatalf("read after shutdown: %v, want close status 1001", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := <-serverDone; err == nil {
		t.Fatal("the sandbox's server did not see its client leave")
	}
	req := mustRequest(t, "GET", fmt.Sprintf("%s/proxy/%s/%d/ws", s.srv.URL, sbx, port))
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	if resp, body := do(t, client(), req); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upgrade after shutdown: %d %s, want 503", resp.StatusCode, body)
	}
}

// TestShutdownMidFrame: a close frame never goes inside a frame. The
// sandbox's server has sent half a message when the proxy shuts down:
// the client gets the whole message, then 1001, and nothing the server
// sends after the message's end.
func TestShutdownMidFrame(t *testing.T) {
	s := newStack(t, Config{})
	msg := frame(0x1, []byte("0123456789"), false)
	proceed, finished := make(chan struct{}), make(chan struct{})
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _ := wsAccept(t, w, r)
		if conn == nil {
			return
		}
		defer conn.Close()
		defer close(finished)
		_, _ = conn.Write(msg[:7])
		<-proceed
		_, _ = conn.Write(append(msg[7:], frame(0x1, []byte("after"), false)...))
		// The client's answer to the close frame, forwarded, then the
		// end of the connection.
		_, _ = conn.Read(make([]byte, 64))
	}))
	t.Cleanup(ws.Close)
	port := portOf(t, ws.Listener.Addr())
	s.add(sbx, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a hang guard
	defer cancel()
	c := dialThrough(t, ctx, s, port)
	var up *upgradedConn
	waitFor(t, "the upgrade", func() bool {
		s.proxy.upgrades.mu.Lock()
		defer s.proxy.upgrades.mu.Unlock()
		for u := range s.proxy.upgrades.open {
			up = u.conn.Load()
		}
		return up != nil
	})
	waitFor(t, "the first half of the message", func() bool {
		up.mu.Lock()
		defer up.mu.Unlock()
		return !up.frames.atBoundary()
	})
	stopped := make(chan error, 1)
	go func() { stopped <- s.proxy.Shutdown(ctx) }()
	waitFor(t, "the shutdown to begin", up.away.Load)
	close(proceed)
	_, got, err := c.Read(ctx)
	if err != nil || string(got) != "0123456789" {
		t.Fatalf("the message in flight: %q, %v", got, err)
	}
	_, got, err = c.Read(ctx)
	if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
		t.Fatalf("after the message: %q, %v; want close status 1001", got, err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	<-finished
}

// TestShutdownBeforeUpgrade: a request on its way to the sandbox when
// the proxy shuts down is ended, not left to hang.
func TestShutdownBeforeUpgrade(t *testing.T) {
	s := newStack(t, Config{})
	arrived := make(chan struct{})
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done() // never answers
	}))
	t.Cleanup(ws.Close)
	port := portOf(t, ws.Listener.Addr())
	s.add(sbx, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a hang guard
	defer cancel()
	status := make(chan int, 1)
	go func() {
		c, resp, err := websocket.Dial(ctx, fmt.Sprintf("ws%s/proxy/%s/%d/ws", strings.TrimPrefix(s.srv.URL, "http"), sbx, port), nil)
		switch {
		case err == nil:
			c.CloseNow()
			status <- http.StatusSwitchingProtocols
		case resp != nil:
			status <- resp.StatusCode
		default:
			t.Error(err)
			status <- 0
		}
	}()
	<-arrived
	if err := s.proxy.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if got := <-status; got != http.StatusServiceUnavailable {
		t.Fatalf("an upgrade under way when the proxy shut down: %d, want 503", got)
	}
}
