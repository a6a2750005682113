package controlplane

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/coder/websocket"

	"roost.dev/roost/errdefs"
	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
	"roost.dev/roost/store"
	"roost.dev/roost/wire"
)

// The WebSocket endpoints (GET /v1/sandboxes/{id}/exec/stream and
// GET /v1/sandboxes/{id}/pty) share one framing:
//
//   - binary frames carry bytes, the first byte naming the channel:
//     chanStdin from the client, chanStdout (a terminal's output) and
//     chanStderr from the server;
//   - text frames carry JSON control messages: from the server
//     {"type":"start","pid":N} first and {"type":"end",...} last; from the
//     client "stdin-close", "signal", "resize" and "kill".
//
// An error after the upgrade closes the socket with code 4000 + the HTTP
// status the REST API would have answered (4400, 4404, 4409, 4502) and the
// message as the reason. A replica that shuts down closes every socket
// with 1001 (going away, sockets.go): a terminal runs on, for the client
// to reattach to through another replica; an exec stream's command is
// killed, as when its client leaves, there being no way back to it.
const (
	chanStdin  = 0
	chanStdout = 1
	chanStderr = 2
)

// wsMessage is a text frame, both ways.
type wsMessage struct {
	Type string `json:"type"`
	// start
	PID uint32 `json:"pid,omitempty"`
	// end
	ExitCode *int32 `json:"exitCode,omitempty"`
	Status   string `json:"status,omitempty"`
	Error    string `json:"error,omitempty"`
	TimedOut bool   `json:"timedOut,omitempty"`
	// signal
	Signal string `json:"signal,omitempty"`
	// resize
	Cols uint32 `json:"cols,omitempty"`
	Rows uint32 `json:"rows,omitempty"`
}

// wsLimits.
const (
	// wsReadLimit bounds one client frame: keystrokes or a stdin chunk.
	wsReadLimit = 1 << 20
	// wsFirstMessage is how long the exec stream waits for its request.
	wsFirstMessage = 10 * time.Second
	// maxTermSize bounds a terminal's columns and rows.
	maxTermSize = 4096
)

var signals = map[string]rpc.Signal{
	"SIGTERM": rpc.Signal_SIGNAL_SIGTERM,
	"SIGKILL": rpc.Signal_SIGNAL_SIGKILL,
}

// acceptConn upgrades r. Browsers must come from the API's own origin;
// clients that send no Origin (SDKs, the CLI) are not browsers. A browser
// that offered its credential as a subprotocol (webSocketCredential) gets
// wire.WebSocketProtocol back, without which it would drop the socket.
func acceptConn(w http.ResponseWriter, r *http.Request) (*websocket.Conn, error) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled,
		Subprotocols: []string{wire.WebSocketProtocol}})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(wsReadLimit)
	return c, nil
}

// closeWithError closes c with the application code of err's HTTP status.
func closeWithError(c *websocket.Conn, err error) {
	status := errdefs.HTTPStatus(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		msg = "internal error"
	}
	_ = c.Close(websocket.StatusCode(4000+status), truncateReason(msg))
}

// truncateReason fits a close reason into a control frame (123 bytes)
// without splitting a UTF-8 sequence.
func truncateReason(s string) string {
	const max = 123
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// session is one process driven over one WebSocket: events out, input in.
type session struct {
	s      *Server
	c      *websocket.Conn
	envd   processconnect.ProcessClient
	target envdTarget
	sel    *rpc.ProcessSelector
	// pty: output goes out on chanStdout; "resize" is allowed.
	pty bool
	// stdin: the process reads what the client sends on chanStdin.
	stdin bool
	// in carries input to envd: one StreamInput call for the session,
	// opened at the first input, so that a keystroke is a frame on an
	// open request rather than a request of its own. Used by input only.
	in *connect.ClientStreamForClient[rpc.StreamInputRequest, rpc.StreamInputResponse]
}

// call adds the sandbox's envd headers to an RPC request.
func (ss *session) call(h http.Header) {
	for k, v := range ss.target.header {
		h[k] = v
	}
}

func (ss *session) writeJSON(ctx context.Context, m wsMessage) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return ss.c.Write(ctx, websocket.MessageText, b)
}

// writeData sends one binary frame on channel ch.
func (ss *session) writeData(ctx context.Context, ch byte, data []byte) error {
	frame := make([]byte, 1+len(data))
	frame[0] = ch
	copy(frame[1:], data)
	return ss.c.Write(ctx, websocket.MessageBinary, frame)
}

// event is what relay needs of a Start or Connect stream.
type event interface {
	Receive() bool
	Err() error
	Close() error
}

// relay sends the process's events to the client until its end; the
// stream's first event (start) has been received by the caller. It
// returns whether the end event was seen.
func (ss *session) relay(ctx context.Context, stream event, next func() *rpc.ProcessEvent, deadline time.Time) (bool, error) {
	for stream.Receive() {
		ev := next()
		if d := ev.GetData(); d != nil {
			var err error
			switch {
			case len(d.GetPty()) > 0:
				err = ss.writeData(ctx, chanStdout, d.GetPty())
			case len(d.GetStdout()) > 0:
				err = ss.writeData(ctx, chanStdout, d.GetStdout())
			case len(d.GetStderr()) > 0:
				err = ss.writeData(ctx, chanStderr, d.GetStderr())
			}
			if err != nil {
				return false, err
			}
		}
		if end := ev.GetEnd(); end != nil {
			code := end.GetExitCode()
			timedOut := !deadline.IsZero() && !end.GetExited() && !time.Now().Before(deadline)
			err := ss.writeJSON(ctx, wsMessage{Type: "end", ExitCode: &code, Status: end.GetStatus(), Error: end.GetError(), TimedOut: timedOut})
			return true, err
		}
	}
	err := stream.Err()
	if !deadline.IsZero() && (connect.CodeOf(err) == connect.CodeDeadlineExceeded || !time.Now().Before(deadline)) {
		// envd killed the command at its deadline and ended the stream.
		code := int32(-1)
		return true, ss.writeJSON(ctx, wsMessage{Type: "end", ExitCode: &code, Status: "timed out", TimedOut: true})
	}
	return false, err
}

// input applies the client's frames to the process until the socket
// closes or ctx ends. Frames are applied in order, one RPC at a time, so
// keystrokes arrive as typed.
func (ss *session) input(ctx context.Context) error {
	defer ss.closeInput()
	for {
		typ, b, err := ss.c.Read(ctx)
		if err != nil {
			return err
		}
		if err := ss.apply(ctx, typ, b); err != nil {
			return err
		}
	}
}

// sendInput writes in to the process over the session's input stream,
// opening it first if need be.
func (ss *session) sendInput(ctx context.Context, in *rpc.ProcessInput) error {
	if ss.in == nil {
		st := ss.envd.StreamInput(ctx)
		ss.call(st.RequestHeader())
		start := &rpc.StreamInputRequest{Event: &rpc.StreamInputRequest_Start{Start: &rpc.StreamInputRequest_StartEvent{Process: ss.sel}}}
		if err := st.Send(start); err != nil {
			_, rerr := st.CloseAndReceive()
			return rpcError(cmp.Or(rerr, err))
		}
		ss.in = st
	}
	err := ss.in.Send(&rpc.StreamInputRequest{Event: &rpc.StreamInputRequest_Data{Data: &rpc.StreamInputRequest_DataEvent{Input: in}}})
	if err != nil {
		// envd ended the call: its answer says why.
		return rpcError(cmp.Or(ss.closeInput(), err))
	}
	return nil
}

// closeInput ends the input stream, once envd has written everything sent
// on it, and returns envd's error, if any.
func (ss *session) closeInput() error {
	if ss.in == nil {
		return nil
	}
	_, err := ss.in.CloseAndReceive()
	ss.in = nil
	return err
}

// errBadFrame refuses a frame the protocol does not have.
var errBadFrame = fmt.Errorf("bad frame: %w", errdefs.ErrInvalid)

func (ss *session) apply(ctx context.Context, typ websocket.MessageType, b []byte) error {
	if typ == websocket.MessageBinary {
		if len(b) == 0 || b[0] != chanStdin {
			return fmt.Errorf("binary frame on channel other than stdin (0): %w", errBadFrame)
		}
		if !ss.stdin {
			return fmt.Errorf("stdin: the exec request did not ask for it (\"stdin\": true): %w", errBadFrame)
		}
		if len(b) == 1 {
			return nil
		}
		in := &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: b[1:]}}
		if ss.pty {
			in = &rpc.ProcessInput{Input: &rpc.ProcessInput_Pty{Pty: b[1:]}}
		}
		return ss.sendInput(ctx, in)
	}
	var m wsMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("control message: %v: %w", err, errBadFrame)
	}
	switch m.Type {
	case "stdin-close":
		// What was sent before reaches the process before its stdin closes.
		if err := ss.closeInput(); err != nil {
			return rpcError(err)
		}
		req := connect.NewRequest(&rpc.CloseStdinRequest{Process: ss.sel})
		ss.call(req.Header())
		_, err := ss.envd.CloseStdin(ctx, req)
		return rpcError(err)
	case "signal", "kill":
		sig, ok := signals[m.Signal]
		if m.Type == "kill" {
			sig, ok = rpc.Signal_SIGNAL_SIGKILL, true
		}
		if !ok {
			return fmt.Errorf("signal %q: want SIGTERM or SIGKILL: %w", m.Signal, errBadFrame)
		}
		return ss.signal(ctx, sig)
	case "resize":
		if !ss.pty {
			return fmt.Errorf("resize: not a terminal: %w", errBadFrame)
		}
		size, err := termSize(m.Cols, m.Rows)
		if err != nil {
			return err
		}
		return ss.resize(ctx, size)
	}
	return fmt.Errorf("control message type %q: %w", m.Type, errBadFrame)
}

func (ss *session) resize(ctx context.Context, size *rpc.PTY_Size) error {
	req := connect.NewRequest(&rpc.UpdateRequest{Process: ss.sel, Pty: &rpc.PTY{Size: size}})
	ss.call(req.Header())
	_, err := ss.envd.Update(ctx, req)
	return rpcError(err)
}

func (ss *session) signal(ctx context.Context, sig rpc.Signal) error {
	req := connect.NewRequest(&rpc.SendSignalRequest{Process: ss.sel, Signal: sig})
	ss.call(req.Header())
	_, err := ss.envd.SendSignal(ctx, req)
	return rpcError(err)
}

// rpcError ignores a process that has just ended (input racing its end is
// not the client's mistake) and categorises the rest.
func rpcError(err error) error {
	if err == nil || connect.CodeOf(err) == connect.CodeNotFound {
		return nil
	}
	if connect.CodeOf(err) == connect.CodeInvalidArgument {
		return fmt.Errorf("%s: %w", connectMessage(err), errdefs.ErrInvalid)
	}
	return errdefs.FromConnect("envd", err)
}

func termSize(cols, rows uint32) (*rpc.PTY_Size, error) {
	if cols == 0 || rows == 0 || cols > maxTermSize || rows > maxTermSize {
		return nil, fmt.Errorf("terminal size %dx%d: want 1-%d columns and rows: %w", cols, rows, maxTermSize, errdefs.ErrInvalid)
	}
	return &rpc.PTY_Size{Cols: cols, Rows: rows}, nil
}

// run drives a session: input in the background, events in front. It
// returns once the process has ended and the end was sent, or the client
// has gone (then, when killOnLeave, the process is killed). stop cancels
// the stream's context; it ends the relay when the client goes.
func (ss *session) run(ctx context.Context, stop context.CancelFunc, stream event, next func() *rpc.ProcessEvent, deadline time.Time, killOnLeave bool) {
	var inputErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		// Reading with ctx, which outlives the relay: cancelling a read
		// would drop the connection before the close handshake.
		inputErr = ss.input(ctx)
		if websocket.CloseStatus(inputErr) != -1 || ctx.Err() != nil || ss.s.sockets.goingAway() {
			inputErr = nil // the client closed, or we did (going away too)
		}
		stop() // the client has gone or broke the protocol
	})
	ended, relayErr := ss.relay(ctx, stream, next, deadline)
	stop()
	stream.Close()
	switch {
	case ended:
		_ = ss.c.Close(websocket.StatusNormalClosure, "")
	case relayErr != nil && !errors.Is(relayErr, context.Canceled) && connect.CodeOf(relayErr) != connect.CodeCanceled:
		closeWithError(ss.c, errdefs.FromConnect("envd stream", relayErr))
	}
	wg.Wait() // a Close above ends the read; so does the client leaving
	if inputErr != nil {
		closeWithError(ss.c, inputErr)
	} else if !ended {
		_ = ss.c.Close(websocket.StatusNormalClosure, "")
	}
	if !ended && killOnLeave {
		kctx, kcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer kcancel()
		if err := ss.signal(kctx, rpc.Signal_SIGNAL_SIGKILL); err != nil {
			ss.s.log.Warn("kill exec after its client left", "sandbox", ss.target.sandboxID, "err", err)
		}
	}
}

// execStream is GET /v1/sandboxes/{id}/exec/stream: a command whose
// output streams as it comes and whose stdin the client can write. The
// first client frame is the exec request (POST .../exec's body, plus
// "stdin"). The command is killed when the client leaves before its end.
func (s *Server) execStream(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	_, t, err := s.runningSandbox(r, key)
	if err != nil {
		s.fail(w, r, "exec stream", err)
		return
	}
	c, release, err := s.sockets.accept(w, r)
	if err != nil {
		return // Accept has answered, or the socket closed going away
	}
	defer release()
	ctx := r.Context()
	first, cancel := context.WithTimeout(ctx, wsFirstMessage)
	typ, body, err := c.Read(first)
	cancel()
	if err != nil {
		closeWithError(c, fmt.Errorf("no exec request within %v: %w", wsFirstMessage, errdefs.ErrInvalid))
		return
	}
	if typ != websocket.MessageText {
		closeWithError(c, fmt.Errorf("the first frame must be the exec request as JSON text: %w", errdefs.ErrInvalid))
		return
	}
	start, user, timeout, err := parseExec(bytes.NewReader(body), true)
	if err != nil {
		closeWithError(c, err)
		return
	}
	ss := &session{s: s, c: c, envd: processconnect.NewProcessClient(s.execClient, t.base, envdClientOptions(maxEnvdMessage)...), target: t, stdin: start.GetStdin()}
	req := connect.NewRequest(start)
	ss.call(req.Header())
	if user != "" {
		req.Header().Set("Authorization", basicUser(user))
	}
	deadline := time.Now().Add(timeout)
	sctx, scancel := context.WithDeadline(ctx, deadline.Add(execGrace))
	defer scancel()
	stream, err := ss.envd.Start(sctx, req)
	if err == nil && !stream.Receive() {
		err = stream.Err()
		if err == nil {
			err = fmt.Errorf("envd ended the stream before the start event: %w", errdefs.ErrUnreachable)
		}
	}
	if err != nil {
		closeWithError(c, execError(t.sandboxID, err))
		return
	}
	pid := stream.Msg().GetEvent().GetStart().GetPid()
	ss.sel = &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: pid}}
	if err := ss.writeJSON(ctx, wsMessage{Type: "start", PID: pid}); err != nil {
		stream.Close()
		_ = ss.signal(context.WithoutCancel(ctx), rpc.Signal_SIGNAL_SIGKILL)
		return
	}
	ss.run(ctx, scancel, stream, func() *rpc.ProcessEvent { return stream.Msg().GetEvent() }, deadline, true)
}

// ptyQuery is GET /v1/sandboxes/{id}/pty's query: a new terminal, or
// pid to reattach to one.
type ptyQuery struct {
	pid       uint32
	size      *rpc.PTY_Size
	cmd, cwd  string
	user      string
	reattach  bool
	sizeGiven bool
}

func parsePTYQuery(r *http.Request) (ptyQuery, error) {
	q := r.URL.Query()
	var p ptyQuery
	num := func(name string, def uint32) (uint32, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("%s %q: not a number: %w", name, v, errdefs.ErrInvalid)
		}
		return uint32(n), nil
	}
	cols, err := num("cols", 80)
	if err != nil {
		return p, err
	}
	rows, err := num("rows", 24)
	if err != nil {
		return p, err
	}
	if p.size, err = termSize(cols, rows); err != nil {
		return p, err
	}
	p.sizeGiven = q.Has("cols") || q.Has("rows")
	if q.Has("pid") {
		if p.pid, err = num("pid", 0); err != nil {
			return p, err
		}
		if p.pid == 0 {
			return p, fmt.Errorf("pid 0: %w", errdefs.ErrInvalid)
		}
		if q.Has("cmd") || q.Has("cwd") || q.Has("user") {
			return p, fmt.Errorf("pid reattaches to a running terminal: cmd, cwd and user apply to new ones: %w", errdefs.ErrInvalid)
		}
		p.reattach = true
	}
	p.cmd, p.cwd, p.user = q.Get("cmd"), q.Get("cwd"), q.Get("user")
	return p, nil
}

// ptySession is GET /v1/sandboxes/{id}/pty: an interactive terminal over
// a WebSocket. Without pid it starts one (a login bash, or cmd through
// bash); with pid it reattaches, and the terminal's scrollback arrives
// first. Closing the socket detaches: the terminal runs on until it exits,
// is killed ({"type":"kill"}), or the sandbox ends.
func (s *Server) ptySession(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	q, err := parsePTYQuery(r)
	if err != nil {
		s.fail(w, r, "pty", err)
		return
	}
	_, t, err := s.runningSandbox(r, key)
	if err != nil {
		s.fail(w, r, "pty", err)
		return
	}
	ctx := r.Context()
	ss := &session{s: s, envd: processconnect.NewProcessClient(s.execClient, t.base, envdClientOptions(maxEnvdMessage)...), target: t, pty: true, stdin: true}
	// The stream is opened before the upgrade, so that a bad command,
	// user or pid is a plain HTTP error.
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	var stream event
	var next func() *rpc.ProcessEvent
	var pid uint32
	if q.reattach {
		req := connect.NewRequest(&rpc.ConnectRequest{Process: &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: q.pid}}})
		ss.call(req.Header())
		cs, err := ss.envd.Connect(sctx, req)
		if err == nil && !cs.Receive() {
			err = streamEndedEarly(cs.Err())
		}
		if err != nil {
			s.fail(w, r, "pty", ptyError(t.sandboxID, err))
			return
		}
		stream, next, pid = cs, func() *rpc.ProcessEvent { return cs.Msg().GetEvent() }, cs.Msg().GetEvent().GetStart().GetPid()
	} else {
		cfg := &rpc.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-i", "-l"},
			Envs: map[string]string{"TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}}
		if q.cmd != "" {
			cfg.Args = []string{"-l", "-c", q.cmd}
		}
		if q.cwd != "" {
			cfg.Cwd = &q.cwd
		}
		req := connect.NewRequest(&rpc.StartRequest{Process: cfg, Pty: &rpc.PTY{Size: q.size}})
		ss.call(req.Header())
		if q.user != "" {
			req.Header().Set("Authorization", basicUser(q.user))
		}
		st, err := ss.envd.Start(sctx, req)
		if err == nil && !st.Receive() {
			err = streamEndedEarly(st.Err())
		}
		if err != nil {
			s.fail(w, r, "pty", execError(t.sandboxID, err))
			return
		}
		stream, next, pid = st, func() *rpc.ProcessEvent { return st.Msg().GetEvent() }, st.Msg().GetEvent().GetStart().GetPid()
	}
	ss.sel = &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: pid}}
	c, release, err := s.sockets.accept(w, r)
	if err != nil {
		stream.Close()
		return
	}
	defer release()
	ss.c = c
	if q.reattach && q.sizeGiven {
		if err := ss.resize(ctx, q.size); err != nil {
			s.log.Debug("resize on reattach", "sandbox", t.sandboxID, "err", err)
		}
	}
	if err := ss.writeJSON(ctx, wsMessage{Type: "start", PID: pid}); err != nil {
		stream.Close()
		return
	}
	ss.run(ctx, scancel, stream, next, time.Time{}, false)
}

func streamEndedEarly(err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("envd ended the stream before the start event: %w", errdefs.ErrUnreachable)
}

// ptyError maps a reattach's refusal: no such process is 404.
func ptyError(id string, err error) error {
	if connect.CodeOf(err) == connect.CodeNotFound {
		return fmt.Errorf("sandbox %s: %s: %w", id, connectMessage(err), errdefs.ErrNotFound)
	}
	return execError(id, err)
}
