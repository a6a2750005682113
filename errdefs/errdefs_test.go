package errdefs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/emptypb"

	"roost.dev/roost/errdefs"
)

// The whole vocabulary, as each edge speaks it.
var table = []struct {
	cat    error
	status int
	code   connect.Code
}{
	{errdefs.ErrNotFound, http.StatusNotFound, connect.CodeNotFound},
	{errdefs.ErrAlreadyExists, http.StatusConflict, connect.CodeAlreadyExists},
	{errdefs.ErrConflict, http.StatusConflict, connect.CodeFailedPrecondition},
	{errdefs.ErrInvalid, http.StatusBadRequest, connect.CodeInvalidArgument},
	{errdefs.ErrUnauthenticated, http.StatusUnauthorized, connect.CodeUnauthenticated},
	{errdefs.ErrPermissionDenied, http.StatusForbidden, connect.CodePermissionDenied},
	{errdefs.ErrExhausted, http.StatusTooManyRequests, connect.CodeResourceExhausted},
	{errdefs.ErrUnsupported, http.StatusNotImplemented, connect.CodeUnimplemented},
	{errdefs.ErrUnavailable, http.StatusServiceUnavailable, connect.CodeUnavailable},
	{errdefs.ErrUnreachable, http.StatusBadGateway, connect.CodeUnavailable},
	{errdefs.ErrTimeout, http.StatusGatewayTimeout, connect.CodeDeadlineExceeded},
}

func TestHTTPStatusAndConnectCode(t *testing.T) {
	for _, tc := range table {
		err := fmt.Errorf("sandbox x: step: %w", tc.cat)
		if got := errdefs.HTTPStatus(err); got != tc.status {
			t.Errorf("HTTPStatus(%v) = %d, want %d", err, got, tc.status)
		}
		if got := errdefs.ConnectCode(err); got != tc.code {
			t.Errorf("ConnectCode(%v) = %s, want %s", err, got, tc.code)
		}
		var ce *connect.Error
		if !errors.As(errdefs.ToConnect(err), &ce) || ce.Code() != tc.code {
			t.Errorf("ToConnect(%v) = %v, want code %s", err, errdefs.ToConnect(err), tc.code)
		}
	}
	for _, tc := range []struct {
		err    error
		status int
		code   connect.Code
	}{
		{errors.New("disk on fire"), http.StatusInternalServerError, connect.CodeInternal},
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), http.StatusGatewayTimeout, connect.CodeDeadlineExceeded},
		{fmt.Errorf("wait: %w", context.Canceled), http.StatusInternalServerError, connect.CodeCanceled},
	} {
		if got := errdefs.HTTPStatus(tc.err); got != tc.status {
			t.Errorf("HTTPStatus(%v) = %d, want %d", tc.err, got, tc.status)
		}
		if got := errdefs.ConnectCode(tc.err); got != tc.code {
			t.Errorf("ConnectCode(%v) = %s, want %s", tc.err, got, tc.code)
		}
	}
	// A Connect error keeps its own code.
	keep := connect.NewError(connect.CodeDataLoss, errors.New("gone"))
	if got := errdefs.ConnectCode(fmt.Errorf("x: %w", keep)); got != connect.CodeDataLoss {
		t.Errorf("ConnectCode of a Connect error = %s", got)
	}
	if errdefs.ToConnect(nil) != nil || errdefs.FromConnect("op", nil) != nil {
		t.Error("nil did not stay nil")
	}
}

// A category crosses a real Connect call and comes back as itself, except
// that unreachable and unavailable share a code: a peer that answered
// "unavailable" is ErrUnavailable.
func TestFromConnectRoundTrip(t *testing.T) {
	var answer error
	mux := http.NewServeMux()
	mux.Handle("/test.v1.T/Call", connect.NewUnaryHandler("/test.v1.T/Call",
		func(context.Context, *connect.Request[emptypb.Empty]) (*connect.Response[emptypb.Empty], error) {
			return nil, errdefs.ToConnect(answer)
		}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	call := connect.NewClient[emptypb.Empty, emptypb.Empty](srv.Client(), srv.URL+"/test.v1.T/Call")
	for _, tc := range table {
		answer = fmt.Errorf("agent side: %w", tc.cat)
		_, err := call.CallUnary(context.Background(), connect.NewRequest(&emptypb.Empty{}))
		got := errdefs.FromConnect("call agent", err)
		want := tc.cat
		if want == errdefs.ErrUnreachable {
			want = errdefs.ErrUnavailable
		}
		if !errors.Is(got, want) {
			t.Errorf("%v across Connect came back as %v", tc.cat, got)
		}
		if errdefs.HTTPStatus(got) != errdefs.HTTPStatus(want) {
			t.Errorf("%v across Connect: status %d", tc.cat, errdefs.HTTPStatus(got))
		}
	}
	answer = errors.New("disk on fire")
	_, err := call.CallUnary(context.Background(), connect.NewRequest(&emptypb.Empty{}))
	if got := errdefs.FromConnect("call agent", err); errdefs.HTTPStatus(got) != http.StatusInternalServerError {
		t.Errorf("internal error across Connect: %v, status %d", got, errdefs.HTTPStatus(got))
	}
}

// A call that gets no answer at all is ErrUnreachable: 502.
func TestFromConnectTransportFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	call := connect.NewClient[emptypb.Empty, emptypb.Empty](http.DefaultClient, "http://"+addr+"/test.v1.T/Call")
	_, err = call.CallUnary(context.Background(), connect.NewRequest(&emptypb.Empty{}))
	got := errdefs.FromConnect("call agent", err)
	if !errors.Is(got, errdefs.ErrUnreachable) || errdefs.HTTPStatus(got) != http.StatusBadGateway {
		t.Fatalf("refused connection: %v (status %d), want ErrUnreachable (502)", got, errdefs.HTTPStatus(got))
	}
}

func TestWriteHTTP(t *testing.T) {
	rec := httptest.NewRecorder()
	errdefs.WriteHTTP(rec, http.StatusConflict, "sandbox x is paused")
	var body errdefs.Body
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusConflict || body.Code != http.StatusConflict || body.Message != "sandbox x is paused" {
		t.Errorf("got %d %+v", rec.Code, body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
}
