package errdefs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
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

// FromHTTP is the error of an answer of status (not 2xx) whose message is
// msg, in the category HTTPStatus maps to status: the other way round,
// for a caller of roost's own HTTP routes.
func FromHTTP(status int, msg string) error {
	for _, e := range []error{ErrNotFound, ErrConflict, ErrInvalid, ErrUnauthenticated, ErrPermissionDenied,
		ErrExhausted, ErrUnsupported, ErrUnreachable, ErrTimeout, ErrUnavailable} {
		if HTTPStatus(e) == status {
			return fmt.Errorf("%s: %w", msg, e)
		}
	}
	return fmt.Errorf("%s (HTTP %d)", msg, status)
}

// ReadHTTPError is the error of resp, an answer that is not 2xx: its
// body's message (E2B's error body, or the body's text) in its status's
// category. It reads the body, not closing it.
func ReadHTTPError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body Body
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &body) == nil && body.Message != "" {
		msg = body.Message
	}
	return FromHTTP(resp.StatusCode, msg)
}
