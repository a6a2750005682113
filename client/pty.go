package client

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	rpc "roost.dev/roost/gen/process"
)

// Size is a terminal's size in characters.
type Size struct{ Cols, Rows uint16 }

// Terminal describes an interactive shell.
type Terminal struct {
	Size    Size
	Resize  <-chan Size // new sizes while the shell runs; may be nil
	Command []string    // default: a login bash
	Env     map[string]string
	User    string
}

// reattachFor bounds how long a shell whose stream broke (the replica of
// the control plane it went through stopped, or the network failed) tries
// to attach again to its command, which runs on in the sandbox.
const reattachFor = 30 * time.Second

// Shell runs an interactive command on a pseudo-terminal: keystrokes read
// from in go to it, its screen output goes to out. It returns the command's
// exit code when it ends; a closed in ends nothing (the shell decides).
// When its stream breaks before the command ends, it attaches to the
// command again (envd's Connect) for up to reattachFor: through another
// replica behind the same address, or the same one back. What the command
// printed while no stream was attached is not shown.
func (e *Envd) Shell(ctx context.Context, t Terminal, in io.Reader, out io.Writer) (int, error) {
	cmd := t.Command
	if len(cmd) == 0 {
		cmd = []string{"/bin/bash", "-i", "-l"}
	}
	env := map[string]string{"TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
	for k, v := range t.Env {
		env[k] = v
	}
	req := connect.NewRequest(&rpc.StartRequest{
		Process: &rpc.ProcessConfig{Cmd: cmd[0], Args: cmd[1:], Envs: env},
		Pty:     &rpc.PTY{Size: &rpc.PTY_Size{Cols: uint32(t.Size.Cols), Rows: uint32(t.Size.Rows)}},
	})
	setUser(req.Header(), t.User)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := e.proc.Start(ctx, req)
	if err != nil {
		return 0, err
	}
	defer func() { stream.Close() }()
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return 0, err
		}
		return 0, errors.New("shell: no start event")
	}
	sel := &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: stream.Msg().GetEvent().GetStart().GetPid()}}

	go e.pumpInput(ctx, sel, in)
	if t.Resize != nil {
		go e.pumpResize(ctx, sel, t.Resize)
	}
	code, ended, err := relay(stream, out)
	for !ended && err == nil {
		var again *connect.ServerStreamForClient[rpc.ConnectResponse]
		if again, err = e.reattach(ctx, sel); err != nil {
			break
		}
		defer again.Close()
		code, ended, err = relay(again, out)
	}
	return code, err
}

// relay copies the command's screen output from stream to out until the
// command ends (ended, with its code), the stream breaks (neither ended
// nor an error: attach again), or out fails.
func relay[T any, P interface {
	*T
	GetEvent() *rpc.ProcessEvent
}](stream *connect.ServerStreamForClient[T], out io.Writer) (code int, ended bool, err error) {
	for stream.Receive() {
		ev := P(stream.Msg()).GetEvent()
		if b := ev.GetData().GetPty(); len(b) > 0 {
			if _, err := out.Write(b); err != nil {
				return 0, false, err
			}
		}
		if end := ev.GetEnd(); end != nil {
			return int(end.GetExitCode()), true, nil
		}
	}
	return 0, false, nil
}

// reattach attaches to the command sel again, trying for up to
// reattachFor while the sandbox cannot be reached.
func (e *Envd) reattach(ctx context.Context, sel *rpc.ProcessSelector) (*connect.ServerStreamForClient[rpc.ConnectResponse], error) {
	deadline := time.Now().Add(reattachFor)
	wait := 100 * time.Millisecond
	for {
		stream, err := e.proc.Connect(ctx, connect.NewRequest(&rpc.ConnectRequest{Process: sel}))
		if err == nil && stream.Receive() { // its start event: attached
			return stream, nil
		}
		if err == nil {
			err = stream.Err()
			stream.Close()
		}
		if err == nil || ctx.Err() != nil || final(err) || time.Now().After(deadline) {
			return nil, fmt.Errorf("shell: its stream broke and attaching again failed: %w", cmp.Or(err, errors.New("no event")))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// final reports whether err is an answer that trying again does not
// change: the command is gone, or the request or its credentials are wrong.
func final(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeNotFound, connect.CodeInvalidArgument, connect.CodePermissionDenied, connect.CodeUnauthenticated:
		return true
	}
	return false
}

// pumpResize sends each new size to the PTY until ctx is done.
func (e *Envd) pumpResize(ctx context.Context, sel *rpc.ProcessSelector, sizes <-chan Size) {
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-sizes:
			_, _ = e.proc.Update(ctx, connect.NewRequest(&rpc.UpdateRequest{Process: sel, Pty: &rpc.PTY{Size: &rpc.PTY_Size{Cols: uint32(s.Cols), Rows: uint32(s.Rows)}}}))
		}
	}
}

// pumpInput streams keystrokes to the PTY until in ends or ctx is done.
// Each read is sent at once, so keystrokes are never held back; one that
// cannot be sent is tried again for up to reattachFor (as the output's
// stream attaches again), so none is lost or reordered.
func (e *Envd) pumpInput(ctx context.Context, sel *rpc.ProcessSelector, in io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := in.Read(buf)
		if n > 0 && !e.sendInput(ctx, sel, append([]byte(nil), buf[:n]...)) {
			return
		}
		if err != nil {
			return
		}
	}
}

// sendInput sends keystrokes b, trying again while the sandbox cannot be
// reached, for up to reattachFor; false: they could not be sent.
func (e *Envd) sendInput(ctx context.Context, sel *rpc.ProcessSelector, b []byte) bool {
	deadline := time.Now().Add(reattachFor)
	input := &rpc.ProcessInput{Input: &rpc.ProcessInput_Pty{Pty: b}}
	for {
		_, err := e.proc.SendInput(ctx, connect.NewRequest(&rpc.SendInputRequest{Process: sel, Input: input}))
		if err == nil {
			return true
		}
		if ctx.Err() != nil || final(err) || time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func basicUser(user string) string { return base64.StdEncoding.EncodeToString([]byte(user + ":")) }
