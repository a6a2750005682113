package main

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"roost.dev/roost/client"
)

// shellSession is `roost shell`'s terminal (client.Envd.Shell) in a
// sandbox, running a line echo, driven by a test.
type shellSession struct {
	in   *io.PipeWriter
	mu   sync.Mutex
	out  strings.Builder
	done chan shellEnd
}

type shellEnd struct {
	code int
	err  error
}

func (s *shellSession) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(p)
}

// startShell opens the terminal in sandbox id through the API at api.
func startShell(t *testing.T, api, key, id string) *shellSession {
	t.Helper()
	c := client.New(api, key)
	sb, err := c.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	r, w := io.Pipe()
	s := &shellSession{in: w, done: make(chan shellEnd, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		code, err := c.Envd(sb).Shell(ctx, client.Terminal{Size: client.Size{Cols: 80, Rows: 24},
			Command: []string{"sh", "-c", `while read l; do echo "echo:$l"; done`}}, r, s)
		s.done <- shellEnd{code, err}
	}()
	return s
}

// echo types line and waits up to within for the shell's echo of it.
func (s *shellSession) echo(t *testing.T, line string, within time.Duration) {
	t.Helper()
	if _, err := s.in.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(within); ; {
		s.mu.Lock()
		got := s.out.String()
		s.mu.Unlock()
		if strings.Contains(got, "echo:"+line) {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("the shell did not echo %q within %v: %q", line, within, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// end types ^D, which ends the echo loop, and wants the shell to return 0.
func (s *shellSession) end(t *testing.T) {
	t.Helper()
	if _, err := s.in.Write([]byte{4}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-s.done:
		if e.err != nil || e.code != 0 {
			t.Errorf("the shell ended with %d, %v; want 0", e.code, e.err)
		}
	case <-time.After(30 * time.Second):
		t.Error("the shell did not end on ^D")
	}
}
