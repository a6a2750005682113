package files

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"syscall"

	"roost.dev/roost/envd/auth"
	"roost.dev/roost/envd/identity"
)

// Handler serves GET, HEAD and POST on /files. It is safe for concurrent
// use; every request works on its own files and buffers.
type Handler struct {
	guard *auth.Guard
	log   *slog.Logger
}

// New returns the /files handler. guard resolves the user a request acts
// as; the access check itself is guard.Wrap's job and must wrap the handler.
// A nil log discards.
func New(guard *auth.Guard, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{guard: guard, log: log}
}

// ServeHTTP dispatches on the method.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if err := h.download(w, r); err != nil {
			h.fail(w, r, err)
		}
	case http.MethodPost:
		if err := h.upload(w, r); err != nil {
			h.fail(w, r, err)
		}
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		h.fail(w, r, &requestError{http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on /files", r.Method)})
	}
}

// user is the Unix user the request acts as.
func (h *Handler) user(r *http.Request) (identity.User, error) {
	u, err := h.guard.User(r.URL.Query().Get("username"), r.Header)
	if err != nil {
		return identity.User{}, fmt.Errorf("resolve user: %w", err)
	}
	return u, nil
}

// fail writes err as envd's JSON error. It is the one place errors become
// statuses; callers only ever call it before the response has started.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	msg := err.Error()
	if status == http.StatusInsufficientStorage {
		msg = "not enough disk space: " + msg
	}
	level := slog.LevelDebug
	if status >= 500 {
		level = slog.LevelError
	}
	h.log.Log(r.Context(), level, "files request failed",
		"method", r.Method, "path", r.URL.Query().Get("path"), "status", status, "err", err)
	auth.WriteError(w, status, msg)
}

// requestError is an error the request itself caused, with the status it
// earns. Its message is written for the caller.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// bodyError marks a failure to read the request body (a malformed multipart
// stream, corrupt gzip, a client that went away), as opposed to a failure to
// write the file, which the disk is to blame for.
type bodyError struct {
	err error
	dst string // the file being written when the read failed, if any
}

func (e *bodyError) Error() string {
	if e.dst != "" {
		return "read request body for " + e.dst + ": " + e.err.Error()
	}
	return "read request body: " + e.err.Error()
}

func (e *bodyError) Unwrap() error { return e.err }

// statusOf maps an error to its HTTP status.
func statusOf(err error) int {
	var re *requestError
	var be *bodyError
	var errno syscall.Errno
	switch {
	case errors.As(err, &re):
		return re.status
	case errors.As(err, &be):
		return http.StatusBadRequest
	case errors.Is(err, identity.ErrUnknownUser), errors.Is(err, identity.ErrBadPath):
		return http.StatusBadRequest
	case errors.As(err, &errno):
		switch errno {
		case syscall.ENOSPC, syscall.EDQUOT:
			return http.StatusInsufficientStorage
		case syscall.EACCES, syscall.EPERM, syscall.EROFS:
			return http.StatusForbidden
		case syscall.ENOENT:
			return http.StatusNotFound
		case syscall.EISDIR, syscall.ENOTDIR, syscall.ENAMETOOLONG, syscall.ELOOP, syscall.EINVAL:
			return http.StatusBadRequest
		case syscall.EFBIG:
			return http.StatusRequestEntityTooLarge
		}
	case errors.Is(err, fs.ErrNotExist):
		return http.StatusNotFound
	case errors.Is(err, fs.ErrPermission):
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}
