package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"roost.dev/roost/errdefs"
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
