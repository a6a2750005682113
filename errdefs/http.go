package errdefs

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// HTTPStatus is the HTTP status of err's category; an error of no category
// is 500. A request's own context ending is the caller's business (it has
// gone): callers check that before answering.
func HTTPStatus(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrAlreadyExists), errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnauthenticated):
		return http.StatusUnauthorized
	case errors.Is(err, ErrPermissionDenied):
		return http.StatusForbidden
	case errors.Is(err, ErrExhausted):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrUnsupported):
		return http.StatusNotImplemented
	case errors.Is(err, ErrUnreachable):
		return http.StatusBadGateway
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// WriteHTTP answers with E2B's error body, {"code": status, "message": msg}:
// the E2B SDKs report the code in it. It is the one writer of that body.
func WriteHTTP(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Body{Code: status, Message: msg})
}

// Body is E2B's error body, as WriteHTTP writes it and clients read it.
type Body struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}
