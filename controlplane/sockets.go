package controlplane

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/coder/websocket"

	"roost.dev/roost/errdefs"
)

// goingAwayReason is the close reason of the sockets a replica that shuts
// down closes: clients reattach through another replica.
const goingAwayReason = "server shutting down: reconnect"

// errGoingAway refuses a socket accepted after the shutdown began.
var errGoingAway = fmt.Errorf("server shutting down: %w", errdefs.ErrUnavailable)

// sockets is the WebSockets the API serves (exec streams, terminals).
// http.Server.Shutdown neither waits for nor closes a connection its
// handler has hijacked, which every WebSocket is: without this set a
// replica that stops would drop them when its process exits, and clients
// would see an abnormal closure (1006) instead of a close frame.
type sockets struct {
	mu sync.Mutex // guards open and closing
	// open holds each socket from its upgrade until its handler returns.
	open    map[*websocket.Conn]struct{}
	closing bool
	// handlers counts the handlers of open sockets, so that Shutdown
	// waits for their last step (an exec stream's kill).
	handlers sync.WaitGroup
}

// accept upgrades r (see acceptConn) and registers the socket; release,
// which the handler defers, unregisters it. A socket accepted once the
// shutdown has begun is closed at once with 1001 and errGoingAway.
func (s *sockets) accept(w http.ResponseWriter, r *http.Request) (c *websocket.Conn, release func(), err error) {
	c, err = acceptConn(w, r)
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		_ = c.Close(websocket.StatusGoingAway, goingAwayReason)
		return nil, nil, errGoingAway
	}
	if s.open == nil {
		s.open = make(map[*websocket.Conn]struct{})
	}
	s.open[c] = struct{}{}
	s.handlers.Add(1)
	s.mu.Unlock()
	return c, func() {
		s.mu.Lock()
		delete(s.open, c)
		s.mu.Unlock()
		s.handlers.Done()
	}, nil
}

// goingAway reports whether the shutdown has begun.
func (s *sockets) goingAway() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// shutdown refuses new sockets, closes every open one with 1001 Going
// Away (each close is a handshake: the frame, then the client's answer,
// concurrently for all), and waits until their handlers have returned
// or ctx ends.
func (s *sockets) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	open := make([]*websocket.Conn, 0, len(s.open))
	for c := range s.open {
		open = append(open, c)
	}
	s.mu.Unlock()
	for _, c := range open {
		go func() { _ = c.Close(websocket.StatusGoingAway, goingAwayReason) }()
	}
	done := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close websockets: %d still open: %w", s.count(), ctx.Err())
	}
}

func (s *sockets) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}
