package filesystem

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	"connectrpc.com/connect"

	rpc "roost.dev/roost/gen/filesystem"
)

const (
	// keepaliveHeader carries the seconds between KeepAlive events on a
	// WatchDir stream; the E2B SDKs send it on every stream.
	keepaliveHeader = "Keepalive-Ping-Interval"
	// defaultKeepalive applies when the header is absent or not a positive
	// number of seconds. It matches the SDKs' own value (and envd/process);
	// E2B's envd falls back to 90 s.
	defaultKeepalive = 50 * time.Second
)

// keepaliveInterval parses the keepalive header.
func keepaliveInterval(h http.Header) time.Duration {
	v, err := strconv.ParseInt(h.Get(keepaliveHeader), 10, 64)
	if err != nil || v <= 0 || v > math.MaxInt64/int64(time.Second) {
		return defaultKeepalive
	}
	return time.Duration(v) * time.Second
}

// watchRequest is what WatchDirRequest and CreateWatcherRequest share.
type watchRequest interface {
	GetPath() string
	GetRecursive() bool
	GetIncludeEntry() bool
	GetAllowNetworkMounts() bool
}

// startWatch validates a watch request and starts the watch; polling
// watches (CreateWatcher's) get a catch-up marker.
func (s *Service) startWatch(h http.Header, req watchRequest, buffer int, polling bool) (*watch, error) {
	_, path, err := s.target(h, req.GetPath())
	if err != nil {
		return nil, err
	}
	if err := requireDir("watch dir", path); err != nil {
		return nil, err
	}
	// Watch the real directory: a recursive walk does not descend through
	// a symlinked root. Event names are relative, so they do not change.
	dir, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("watch dir: %w", err)
	}
	if !req.GetAllowNetworkMounts() {
		remote, err := onNetworkMount(dir)
		if err != nil {
			return nil, fmt.Errorf("watch dir: statfs %s: %w", dir, err)
		}
		if remote {
			return nil, fmt.Errorf("watch dir %s: on a network filesystem, where changes made elsewhere go unseen; set allow_network_mounts to watch anyway: %w", path, errBadRequest)
		}
	}
	return startWatch(dir, watchOptions{
		recursive:    req.GetRecursive(),
		includeEntry: req.GetIncludeEntry(),
		buffer:       buffer,
		catchUp:      polling,
	}, s.log)
}

// WatchDir streams start, then filesystem events under the directory, with
// keepalives while idle. It ends when the client goes away (canceled or
// deadline_exceeded), the service closes (unavailable), the client cannot
// keep up (resource_exhausted) or the directory itself goes (not_found).
func (s *Service) WatchDir(ctx context.Context, req *connect.Request[rpc.WatchDirRequest], stream *connect.ServerStream[rpc.WatchDirResponse]) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("watch dir: panic", "panic", r, "stack", string(debug.Stack()))
			err = connect.NewError(connect.CodeInternal, errors.New("watch dir: internal error"))
		}
	}()
	w, err := s.startWatch(req.Header(), req.Msg, s.streamBuffer, false)
	if err != nil {
		return connectError(err)
	}
	defer w.stop()
	if !s.track(w) {
		return connectError(errClosed)
	}
	defer s.untrack(w)

	s.log.Debug("watch dir started", "root", w.root, "recursive", w.opts.recursive)
	err = relay(ctx, w, stream, keepaliveInterval(req.Header()))
	s.log.Debug("watch dir ended", "root", w.root, "err", err)
	return connectError(err)
}

// relay copies a watch's events to a stream until one of them ends.
func relay(ctx context.Context, w *watch, stream *connect.ServerStream[rpc.WatchDirResponse], every time.Duration) error {
	if err := stream.Send(&rpc.WatchDirResponse{
		Event: &rpc.WatchDirResponse_Start{Start: &rpc.WatchDirResponse_StartEvent{}},
	}); err != nil {
		return fmt.Errorf("send start: %w", err)
	}
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.events:
			if !ok {
				if w.err == nil {
					return errClosed
				}
				return w.err
			}
			if err := stream.Send(&rpc.WatchDirResponse{
				Event: &rpc.WatchDirResponse_Filesystem{Filesystem: e},
			}); err != nil {
				return fmt.Errorf("send event: %w", err)
			}
			ticker.Reset(every)
		case <-ticker.C:
			if err := stream.Send(&rpc.WatchDirResponse{
				Event: &rpc.WatchDirResponse_Keepalive{Keepalive: &rpc.WatchDirResponse_KeepAlive{}},
			}); err != nil {
				return fmt.Errorf("send keepalive: %w", err)
			}
		}
	}
}

// track registers a stream's watch so Close can stop it; false once closed.
func (s *Service) track(w *watch) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.streams[w] = struct{}{}
	return true
}

func (s *Service) untrack(w *watch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, w)
}

// CreateWatcher starts a watch whose events are collected for
// GetWatcherEvents, and returns its unguessable id.
func (s *Service) CreateWatcher(_ context.Context, req *connect.Request[rpc.CreateWatcherRequest]) (*connect.Response[rpc.CreateWatcherResponse], error) {
	w, err := s.startWatch(req.Header(), req.Msg, s.pollBuffer, true)
	if err != nil {
		return nil, connectError(err)
	}
	id := "w" + rand.Text()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		w.stop()
		return nil, connectError(errClosed)
	}
	s.pollers[id] = w
	s.mu.Unlock()

	s.log.Debug("watcher created", "watcher", id, "root", w.root, "recursive", w.opts.recursive)
	return connect.NewResponse(&rpc.CreateWatcherResponse{WatcherId: id}), nil
}

// GetWatcherEvents returns and clears the events collected since the last
// call, including every change made before the call (see watch.catchUp). A watcher that has ended (its buffer overflowed, or its directory
// went) is removed and reported once, as resource_exhausted or not_found;
// its undelivered events are discarded with it.
func (s *Service) GetWatcherEvents(ctx context.Context, req *connect.Request[rpc.GetWatcherEventsRequest]) (*connect.Response[rpc.GetWatcherEventsResponse], error) {
	id := req.Msg.GetWatcherId()
	s.mu.Lock()
	w, ok := s.pollers[id]
	s.mu.Unlock()
	if !ok {
		return nil, connectError(fmt.Errorf("get watcher events %q: %w", id, errUnknownWatcher))
	}
	w.catchUp(ctx)
	events, ended := w.drain()
	if !ended {
		return connect.NewResponse(&rpc.GetWatcherEventsResponse{Events: events}), nil
	}

	s.mu.Lock()
	if s.pollers[id] == w {
		delete(s.pollers, id)
	}
	s.mu.Unlock()
	w.stop()
	err := w.err
	if err == nil {
		err = errClosed
	}
	s.log.Debug("watcher ended", "watcher", id, "root", w.root, "err", err)
	return nil, connectError(fmt.Errorf("get watcher events %q: %w", id, err))
}

// RemoveWatcher stops a watcher and forgets it.
func (s *Service) RemoveWatcher(_ context.Context, req *connect.Request[rpc.RemoveWatcherRequest]) (*connect.Response[rpc.RemoveWatcherResponse], error) {
	id := req.Msg.GetWatcherId()
	s.mu.Lock()
	w, ok := s.pollers[id]
	delete(s.pollers, id)
	s.mu.Unlock()
	if !ok {
		return nil, connectError(fmt.Errorf("remove watcher %q: %w", id, errUnknownWatcher))
	}
	w.stop()
	s.log.Debug("watcher removed", "watcher", id, "root", w.root)
	return connect.NewResponse(&rpc.RemoveWatcherResponse{}), nil
}
