package agent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
	"roost.dev/roost/wire"
)

// readyInterval is how often a template's ready command is run while its
// start command comes up: from one run's start to the next (a run that
// takes longer is followed at once).
const readyInterval = 20 * time.Millisecond

// outputTail is how much of a command's last output an error quotes.
const outputTail = 2048

// startCommand is a template's start and ready commands and how they run:
// `/bin/bash -l -c CMD` through envd, as user in workdir with env (on top
// of what envd gives every process).
type startCommand struct {
	Start, Ready  string
	User, Workdir string
	Env           map[string]string
}

// commandRunner runs commands in one sandbox through its envd's process
// service.
type commandRunner struct {
	client processconnect.ProcessClient
	token  string // envd's access token, if it has one
}

func (m *Manager) commandRunner(addr netip.AddrPort, token string) commandRunner {
	// Not envd's plain client: its timeout would cut long streams.
	hc := &http.Client{Transport: m.envd.transport}
	return commandRunner{client: processconnect.NewProcessClient(hc, "http://"+addr.String()), token: token}
}

// shellRequest is a Start of `bash -l -c script` as user in workdir, with
// no stdin.
func (r commandRunner) shellRequest(script, user, workdir string, env map[string]string) *connect.Request[rpc.StartRequest] {
	cfg := &rpc.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-l", "-c", script}, Envs: env}
	if workdir != "" {
		cfg.Cwd = &workdir
	}
	stdin := false
	req := connect.NewRequest(&rpc.StartRequest{Process: cfg, Stdin: &stdin})
	r.authorize(req.Header(), user)
	return req
}

// authorize sets the headers that pick envd's user and pass its token.
func (r commandRunner) authorize(h http.Header, user string) {
	if user != "" {
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":")))
	}
	if r.token != "" {
		h.Set(wire.HeaderAccessToken, r.token)
	}
}

// run runs a command to its end and returns its exit code; out, when set,
// gets its output as it arrives.
func (r commandRunner) run(ctx context.Context, req *connect.Request[rpc.StartRequest], out func([]byte)) (int, error) {
	stream, err := r.client.Start(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", req.Msg.GetProcess().GetCmd(), errdefs.FromConnect("envd process start", err))
	}
	defer stream.Close()
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		if d := ev.GetData(); d != nil && out != nil {
			out(d.GetStdout())
			out(d.GetStderr())
		}
		if end := ev.GetEnd(); end != nil {
			return int(end.GetExitCode()), nil
		}
	}
	if err := stream.Err(); err != nil {
		return 0, fmt.Errorf("run %s: %w", req.Msg.GetProcess().GetCmd(), errdefs.FromConnect("envd process", err))
	}
	return 0, fmt.Errorf("run %s: envd ended the stream without an end event: %w", req.Msg.GetProcess().GetCmd(), errdefs.ErrUnreachable)
}

// startAndWait starts sc.Start in the background and returns once
// sc.Ready exits 0 (at once when there is no ready command). The start
// command keeps running after it returns: envd leaves a process running
// when its client goes away, and its stream is not bound to ctx. ctx
// bounds the wait; when it ends first, or the start command fails before
// it is ready, the error quotes the start command's last output.
func (r commandRunner) startAndWait(ctx context.Context, sc startCommand) error {
	started, err := r.startBackground(sc)
	if err != nil {
		return err
	}
	defer started.detach()
	if sc.Ready == "" {
		return nil
	}
	tick := time.NewTicker(readyInterval)
	defer tick.Stop()
	var last tail
	for {
		last.reset()
		code, err := r.run(ctx, r.shellRequest(sc.Ready, sc.User, sc.Workdir, sc.Env), last.write)
		if err == nil && code == 0 {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			return fmt.Errorf("ready command %q: %w", sc.Ready, err)
		}
		select {
		case <-ctx.Done():
		case <-started.failed:
			return fmt.Errorf("start command %q exited with code %d before the ready command %q succeeded: output: %q: %w",
				sc.Start, started.exitCode, sc.Ready, started.out.String(), errdefs.ErrUnavailable)
		case <-tick.C:
			continue
		}
		break
	}
	return fmt.Errorf("start command %q not ready (ready command %q: last output %q) when the create's deadline passed: output: %q: %w: %w",
		sc.Start, sc.Ready, last.String(), started.out.String(), errdefs.ErrTimeout, ctx.Err())
}

// background is a start command running in the background, its stream
// relayed until detach.
type background struct {
	out    *tail
	failed chan struct{} // closed when it ends with a non-zero code
	// exitCode is its exit code once failed is closed.
	exitCode int
	detach   func() // stops relaying; the process keeps running
}

// startBackground starts sc.Start and returns once envd says it runs.
// Its stream lives on a context of its own, without a deadline: envd
// kills a process whose stream's deadline passes.
func (r commandRunner) startBackground(sc startCommand) (*background, error) {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := r.client.Start(ctx, r.shellRequest(sc.Start, sc.User, sc.Workdir, sc.Env))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("start command %q: %w", sc.Start, errdefs.FromConnect("envd process start", err))
	}
	if !stream.Receive() || stream.Msg().GetEvent().GetStart() == nil {
		err := stream.Err()
		stream.Close()
		cancel()
		if err == nil {
			err = errors.New("envd sent no start event")
		}
		return nil, fmt.Errorf("start command %q: %w", sc.Start, errdefs.FromConnect("envd process start", err))
	}
	b := &background{out: &tail{}, failed: make(chan struct{})}
	relayed := make(chan struct{})
	go func() {
		defer close(relayed)
		defer stream.Close()
		for stream.Receive() {
			ev := stream.Msg().GetEvent()
			if d := ev.GetData(); d != nil {
				b.out.write(d.GetStdout())
				b.out.write(d.GetStderr())
			}
			// An exit 0 may be a start command that leaves a daemon
			// behind: the ready command is the judge of that.
			if end := ev.GetEnd(); end != nil && end.GetExitCode() != 0 {
				b.exitCode = int(end.GetExitCode())
				close(b.failed)
			}
		}
	}()
	b.detach = func() {
		cancel()
		<-relayed
	}
	return b, nil
}

// tail keeps the last outputTail bytes written to it; safe for
// concurrent use.
type tail struct {
	mu  sync.Mutex // guards buf
	buf []byte
}

func (t *tail) write(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if n := len(t.buf); n > outputTail {
		t.buf = append(t.buf[:0], t.buf[n-outputTail:]...)
	}
}

func (t *tail) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = t.buf[:0]
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

// commandEnv is the environment of a template's commands: the
// template's, then the create's on top.
func commandEnv(tpl, req map[string]string) map[string]string {
	env := maps.Clone(tpl)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, req)
	return env
}
