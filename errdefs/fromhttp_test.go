package errdefs

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestFromHTTP maps each category to its status and back, and reads an
// answer's message from E2B's error body or plain text.
func TestFromHTTP(t *testing.T) {
	for _, e := range []error{ErrNotFound, ErrConflict, ErrInvalid, ErrUnauthenticated, ErrPermissionDenied,
		ErrExhausted, ErrUnsupported, ErrUnreachable, ErrTimeout, ErrUnavailable} {
		if got := FromHTTP(HTTPStatus(e), "m"); !errors.Is(got, e) {
			t.Errorf("%v: status %d came back as %v", e, HTTPStatus(e), got)
		}
	}
	if got := FromHTTP(http.StatusInternalServerError, "boom"); got.Error() != "boom (HTTP 500)" {
		t.Errorf("500: %v", got)
	}
	rec := httptest.NewRecorder()
	WriteHTTP(rec, http.StatusConflict, "sandbox is moving")
	if got := ReadHTTPError(rec.Result()); !errors.Is(got, ErrConflict) || !strings.HasPrefix(got.Error(), "sandbox is moving:") {
		t.Errorf("E2B's body: %v", got)
	}
	rec = httptest.NewRecorder()
	http.Error(rec, "plain words", http.StatusNotFound)
	if got := ReadHTTPError(rec.Result()); !errors.Is(got, ErrNotFound) || !strings.HasPrefix(got.Error(), "plain words:") {
		t.Errorf("plain text: %v", got)
	}
}
