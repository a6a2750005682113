package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
)

// TestServe serves on loopback, answers HTTP/1.1 and h2c (the control
// plane's RPC client may use either), and returns when its context ends.
// Without a token or mutual TLS it refuses to serve at all.
func TestServe(t *testing.T) {
	open := newServer(hostagentv1connect.UnimplementedHostAgentServiceHandler{}, testResolver, ServerConfig{}, testLogger(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := open.Serve(context.Background(), ln); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Serve without authentication: %v, want a refusal", err)
	}

	s := newServer(hostagentv1connect.UnimplementedHostAgentServiceHandler{}, testResolver, ServerConfig{Token: "secret"}, testLogger(t))
	if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()

	url := "http://" + ln.Addr().String() + "/health"
	h1, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	h1.Body.Close()
	if h1.StatusCode != http.StatusNoContent || h1.ProtoMajor != 1 {
		t.Errorf("HTTP/1.1: %s %s", h1.Proto, h1.Status)
	}

	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: protocols, TLSClientConfig: &tls.Config{}}}
	h2, err := h2c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	h2.Body.Close()
	if h2.StatusCode != http.StatusNoContent || h2.ProtoMajor != 2 {
		t.Errorf("h2c: %s %s", h2.Proto, h2.Status)
	}
	h2c.CloseIdleConnections()

	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestLineLogger(t *testing.T) {
	var buf strings.Builder
	w := &lineLogger{log: slog.New(slog.NewTextHandler(&buf, nil))}
	for _, chunk := range []string{"I: Retrieving Release\nI: Valid", "ating\n\n   \nlast line without newline"} {
		if n, err := w.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	w.flush()
	var lines []string
	for l := range strings.Lines(buf.String()) {
		_, after, _ := strings.Cut(l, "line=")
		lines = append(lines, strings.TrimSpace(after))
	}
	want := []string{`"I: Retrieving Release"`, `"I: Validating"`, `"last line without newline"`}
	if !slices.Equal(lines, want) {
		t.Errorf("logged %q, want %q", lines, want)
	}
}

// listingService lists many sandboxes: an answer large enough that
// Connect would compress it for a client that asks.
type listingService struct {
	hostagentv1connect.UnimplementedHostAgentServiceHandler
}

func (listingService) ListSandboxes(context.Context, *connect.Request[hostagentv1.ListSandboxesRequest]) (*connect.Response[hostagentv1.ListSandboxesResponse], error) {
	out := &hostagentv1.ListSandboxesResponse{}
	for i := range 1000 {
		out.Sandboxes = append(out.Sandboxes, &hostagentv1.Sandbox{SandboxId: fmt.Sprintf("sb%04d", i), Template: "base"})
	}
	return connect.NewResponse(out), nil
}

// TestServerUncompressed: the agent answers uncompressed even when the
// control plane asks for gzip, as older control planes do (the agent
// link's listings cost more CPU packed than their bytes cost the
// network).
func TestServerUncompressed(t *testing.T) {
	s := newServer(listingService{}, testResolver, ServerConfig{Token: "secret"}, testLogger(t))
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	req, err := http.NewRequest("POST", srv.URL+hostagentv1connect.HostAgentServiceListSandboxesProcedure, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/proto")
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("Authorization", "Bearer secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", resp.Status, body)
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" {
		t.Errorf("answer's Content-Encoding %q, want none", enc)
	}
	var got hostagentv1.ListSandboxesResponse
	if err := proto.Unmarshal(body, &got); err != nil || len(got.GetSandboxes()) != 1000 {
		t.Errorf("answer: %d sandboxes, %v; want 1000", len(got.GetSandboxes()), err)
	}
}
