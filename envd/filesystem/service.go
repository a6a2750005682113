package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"connectrpc.com/connect"

	"roost.dev/roost/envd/auth"
	"roost.dev/roost/envd/identity"
	rpc "roost.dev/roost/gen/filesystem"
	"roost.dev/roost/gen/filesystem/filesystemconnect"
)

// Buffer sizes, in events, between a watch and its consumer. A consumer that
// lets the buffer fill loses its watch with resource_exhausted.
const (
	defaultStreamBuffer = 4096  // WatchDir: events queued ahead of a slow stream
	defaultPollBuffer   = 16384 // CreateWatcher: events held between two polls
)

// Service implements filesystemconnect.FilesystemHandler. Its methods are
// safe for concurrent use. It owns every watch it starts: a WatchDir watch
// lives until its stream ends, a CreateWatcher watch until RemoveWatcher, an
// overflow reported by GetWatcherEvents, or Close.
type Service struct {
	guard *auth.Guard
	log   *slog.Logger

	streamBuffer int // events a WatchDir stream may queue; tests lower it
	pollBuffer   int // events a polling watcher may hold; tests lower it

	mu      sync.Mutex // guards closed, streams and pollers
	closed  bool
	streams map[*watch]struct{}
	pollers map[string]*watch
}

var _ filesystemconnect.FilesystemHandler = (*Service)(nil)

// New returns the service; guard resolves the request's user
// (auth.Guard.ConnectUser(req.Header())) and paths resolve with
// identity.User.Resolve (relative paths against the user's home).
func New(guard *auth.Guard, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{
		guard:        guard,
		log:          log,
		streamBuffer: defaultStreamBuffer,
		pollBuffer:   defaultPollBuffer,
		streams:      map[*watch]struct{}{},
		pollers:      map[string]*watch{},
	}
}

// Close stops all watchers (WatchDir streams and CreateWatcher watchers) and
// makes later watch requests fail with unavailable. Streams end once their
// handler has sent what was already queued. Close is safe to call twice.
func (s *Service) Close() error {
	s.mu.Lock()
	s.closed = true
	all := make([]*watch, 0, len(s.streams)+len(s.pollers))
	for w := range s.streams {
		all = append(all, w)
	}
	for _, w := range s.pollers {
		all = append(all, w)
	}
	clear(s.streams)
	clear(s.pollers)
	s.mu.Unlock()

	for _, w := range all {
		w.stop()
	}
	return nil
}

// target resolves the requesting user and the path p they named.
func (s *Service) target(h http.Header, p string) (identity.User, string, error) {
	u, err := s.guard.ConnectUser(h)
	if err != nil {
		return identity.User{}, "", err
	}
	path, err := resolvePath(u, p)
	if err != nil {
		return identity.User{}, "", err
	}
	return u, path, nil
}

// Stat describes one path; a final symlink is described, not followed.
func (s *Service) Stat(_ context.Context, req *connect.Request[rpc.StatRequest]) (*connect.Response[rpc.StatResponse], error) {
	_, path, err := s.target(req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, connectError(err)
	}
	e, err := newNames().entry(path)
	if err != nil {
		return nil, connectError(fmt.Errorf("stat: %w", err))
	}
	return connect.NewResponse(&rpc.StatResponse{Entry: e}), nil
}

// ListDir lists a directory (following a symlink to it) to the requested
// depth; 0 means 1, the directory's children.
func (s *Service) ListDir(_ context.Context, req *connect.Request[rpc.ListDirRequest]) (*connect.Response[rpc.ListDirResponse], error) {
	_, path, err := s.target(req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, connectError(err)
	}
	if err := requireDir("list dir", path); err != nil {
		return nil, connectError(err)
	}
	entries, err := listDir(s.log, path, max(req.Msg.GetDepth(), 1))
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&rpc.ListDirResponse{Entries: entries}), nil
}

// requireDir fails unless path is, or links to, a directory.
func requireDir(op, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s %s: %w", op, path, errNotDir)
	}
	return nil
}

// MakeDir creates a directory and any missing parents (mkdir -p), owned by
// the requesting user. An existing directory is already_exists; an existing
// non-directory is invalid_argument, as in E2B.
func (s *Service) MakeDir(_ context.Context, req *connect.Request[rpc.MakeDirRequest]) (*connect.Response[rpc.MakeDirResponse], error) {
	u, path, err := s.target(req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, connectError(err)
	}
	if err := makeDir(u, path); err != nil {
		return nil, connectError(err)
	}
	e, err := newNames().entry(path)
	if err != nil {
		return nil, connectError(fmt.Errorf("stat new dir: %w", err))
	}
	return connect.NewResponse(&rpc.MakeDirResponse{Entry: e}), nil
}

// makeDir creates path's parents as needed, then path itself, exclusively.
func makeDir(u identity.User, path string) error {
	if err := ensureDir(u, filepath.Dir(path)); err != nil {
		return err
	}
	err := os.Mkdir(path, 0o755)
	if errors.Is(err, fs.ErrExist) {
		if fi, serr := os.Stat(path); serr == nil && fi.IsDir() {
			return fmt.Errorf("make dir %s: %w", path, errDirExists)
		}
		return fmt.Errorf("make dir %s: a non-directory exists at this path: %w", path, errNotDir)
	}
	if err != nil {
		return fmt.Errorf("make dir: %w", err)
	}
	return u.Chown(path)
}

// ensureDir makes sure dir is a directory, creating it and its missing
// parents for u. Directories created concurrently by others are accepted.
func ensureDir(u identity.User, dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("make dir %s: a non-directory exists at this path: %w", dir, errNotDir)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("make dir: %w", err)
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := ensureDir(u, parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if fi, serr := os.Stat(dir); errors.Is(err, fs.ErrExist) && serr == nil && fi.IsDir() {
			return nil
		}
		return fmt.Errorf("make dir: %w", err)
	}
	return u.Chown(dir)
}

// Move renames source to destination, creating the destination's parents
// (owned by the requesting user), and describes the result. An existing
// destination file is replaced, like rename(2).
func (s *Service) Move(_ context.Context, req *connect.Request[rpc.MoveRequest]) (*connect.Response[rpc.MoveResponse], error) {
	u, src, err := s.target(req.Header(), req.Msg.GetSource())
	if err != nil {
		return nil, connectError(err)
	}
	_, dst, err := s.target(req.Header(), req.Msg.GetDestination())
	if err != nil {
		return nil, connectError(err)
	}
	if err := move(u, src, dst); err != nil {
		return nil, connectError(err)
	}
	e, err := newNames().entry(dst)
	if err != nil {
		return nil, connectError(fmt.Errorf("stat moved entry: %w", err))
	}
	return connect.NewResponse(&rpc.MoveResponse{Entry: e}), nil
}

func move(u identity.User, src, dst string) error {
	// Check before creating the destination's parents, so a bad request
	// leaves nothing behind.
	if _, err := os.Lstat(src); err != nil {
		return fmt.Errorf("move: %w", err)
	}
	if strings.HasPrefix(dst, src+string(filepath.Separator)) || (src == "/" && dst != "/") {
		return fmt.Errorf("move %s into itself (%s): %w", src, dst, errBadRequest)
	}
	if err := ensureDir(u, filepath.Dir(dst)); err != nil {
		return fmt.Errorf("move: %w", err)
	}
	if err := os.Rename(src, dst); err != nil {
		return fmt.Errorf("move: %w", err)
	}
	return nil
}

// Remove deletes a file, symlink or directory tree; a missing path is
// not_found.
func (s *Service) Remove(_ context.Context, req *connect.Request[rpc.RemoveRequest]) (*connect.Response[rpc.RemoveResponse], error) {
	_, path, err := s.target(req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, connectError(err)
	}
	if err := remove(path); err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&rpc.RemoveResponse{}), nil
}

func remove(path string) error {
	if path == "/" {
		return fmt.Errorf("remove /: refusing to remove the root directory: %w", errBadRequest)
	}
	// Removing what is not there succeeds, as with E2B's envd: the SDKs'
	// remove is idempotent. A parent that is not a directory stays an error.
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	return nil
}
