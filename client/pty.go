package client

import (
	"context"
	"encoding/base64"
	"errors"
	"io"

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

// Shell runs an interactive command on a pseudo-terminal: keystrokes read
// from in go to it, its screen output goes to out. It returns the command's
// exit code when it ends; a closed in ends nothing (the shell decides).
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
	defer stream.Close()
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return 0, err
		}
		return 0, errors.New("shell: no start event")
	}
	sel := &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: stream.Msg().GetEvent().GetStart().GetPid()}}

	go e.pumpInput(ctx, sel, in)
	if t.Resize != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case s := <-t.Resize:
					_, _ = e.proc.Update(ctx, connect.NewRequest(&rpc.UpdateRequest{Process: sel, Pty: &rpc.PTY{Size: &rpc.PTY_Size{Cols: uint32(s.Cols), Rows: uint32(s.Rows)}}}))
				}
			}
		}()
	}
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		if b := ev.GetData().GetPty(); len(b) > 0 {
			if _, err := out.Write(b); err != nil {
				return 0, err
			}
		}
		if end := ev.GetEnd(); end != nil {
			return int(end.GetExitCode()), nil
		}
	}
	if err := stream.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("shell: the stream ended without an exit status")
}

// pumpInput streams keystrokes to the PTY until in ends or ctx is done.
// Each read is sent at once, so keystrokes are never held back.
func (e *Envd) pumpInput(ctx context.Context, sel *rpc.ProcessSelector, in io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			input := &rpc.ProcessInput{Input: &rpc.ProcessInput_Pty{Pty: append([]byte(nil), buf[:n]...)}}
			if _, serr := e.proc.SendInput(ctx, connect.NewRequest(&rpc.SendInputRequest{Process: sel, Input: input})); serr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func basicUser(user string) string { return base64.StdEncoding.EncodeToString([]byte(user + ":")) }
