package runtimetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
)

// Result is what a command run in a sandbox produced.
type Result struct {
	Stdout, Stderr string
	ExitCode       int
}

// Exec runs a shell command in the sandbox through its envd and waits for
// it to end.
func (s *Sandbox) Exec(ctx context.Context, script string) (Result, error) {
	c := processconnect.NewProcessClient(http.DefaultClient, s.Envd)
	stream, err := c.Start(ctx, connect.NewRequest(&rpc.StartRequest{
		Process: &rpc.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", script}},
	}))
	if err != nil {
		return Result{}, err
	}
	var out, errb bytes.Buffer
	var res Result
	ended := false
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		out.Write(ev.GetData().GetStdout())
		errb.Write(ev.GetData().GetStderr())
		if e := ev.GetEnd(); e != nil {
			res.ExitCode = int(e.GetExitCode())
			ended = true
		}
	}
	if err := stream.Err(); err != nil {
		return Result{}, err
	}
	if !ended {
		return Result{}, fmt.Errorf("no end event")
	}
	res.Stdout, res.Stderr = out.String(), errb.String()
	return res, nil
}

// MustExec is Exec that fails the test on error or a non-zero exit.
func (s *Sandbox) MustExec(t testing.TB, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := s.Exec(ctx, script)
	if err != nil {
		t.Fatalf("exec %q: %v", script, err)
	}
	if r.ExitCode != 0 {
		t.Fatalf("exec %q: exit %d, stderr %q", script, r.ExitCode, r.Stderr)
	}
	return r.Stdout
}

// WriteFile uploads a file through envd's /files.
func (s *Sandbox) WriteFile(ctx context.Context, path string, data []byte) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.Envd+"/files?path="+url.QueryEscape(path), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("upload %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// ReadFile downloads a file through envd's /files.
func (s *Sandbox) ReadFile(ctx context.Context, path string) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Envd+"/files?path="+url.QueryEscape(path), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("download %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// Reaches reports whether a connection from inside the sandbox to
// host:port succeeds within 2 s.
func (s *Sandbox) Reaches(ctx context.Context, host string, port int) bool {
	script := fmt.Sprintf("timeout 2 bash -c 'echo > /dev/tcp/%s/%d' && echo reached", host, port)
	r, _ := s.Exec(ctx, script)
	return strings.Contains(r.Stdout, "reached")
}

// HostListener listens on every IPv4 address of the host, on a free
// port, and accepts and closes connections until the test ends; it
// returns the port: a host service a sandbox must not reach.
func HostListener(t testing.TB) int { return HostListenerAt(t, "tcp", "0.0.0.0:0") }

// HostListenerAt is HostListener on address of network (net.Listen's),
// "[::]:0" of "tcp6" say.
func HostListenerAt(t testing.TB, network, address string) int {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
