package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
	"roost.dev/roost/store"
)

// Exec limits.
const (
	defaultExecTimeout = 60 * time.Second
	// defaultExecOutput is how much of each of stdout and stderr an exec
	// answer holds; the rest is read and dropped.
	defaultExecOutput = 16 << 20
	// execGrace is how much longer the control plane waits than envd's
	// deadline, so envd ends the stream itself (and the connections through
	// the agent stay sound) rather than the control plane cutting it.
	execGrace = 2 * time.Second
)

// connectTimeoutHeader is Connect's deadline header, in milliseconds.
const connectTimeoutHeader = "Connect-Timeout-Ms"

// graceTransport sends envd a deadline execGrace earlier than the call's
// own, which connect-go derives from the context.
type graceTransport struct{ next http.RoundTripper }

func (g graceTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ms, err := strconv.ParseInt(r.Header.Get(connectTimeoutHeader), 10, 64)
	if err != nil {
		return g.next.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.Header.Set(connectTimeoutHeader, strconv.FormatInt(max(ms-execGrace.Milliseconds(), 1), 10))
	return g.next.RoundTrip(r)
}

// execRequest is POST /v1/sandboxes/{id}/exec's body: exactly one of Cmd
// (run with /bin/bash -lc) and Args (Args[0] is the program).
type execRequest struct {
	Cmd     string            `json:"cmd"`
	Args    []string          `json:"args"`
	Env     map[string]string `json:"env"`
	Cwd     string            `json:"cwd"`
	User    string            `json:"user"`
	Timeout *float64          `json:"timeout"` // seconds; absent or 0: 60
	// Stdin keeps the command's stdin open for the client to write
	// (the streaming endpoint only).
	Stdin bool `json:"stdin"`
}

// execResponse is the exec answer. Output is JSON text: bytes that are
// not UTF-8 become U+FFFD.
type execResponse struct {
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	ExitCode        int32  `json:"exitCode"`
	DurationMs      int64  `json:"durationMs"`
	TimedOut        bool   `json:"timedOut"`
	StdoutTruncated bool   `json:"stdoutTruncated"`
	StderrTruncated bool   `json:"stderrTruncated"`
	// Status is envd's description of the end, e.g. "exit status 1" or
	// "signal: killed"; Error is set when the process could not run.
	Status string `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
}

// parseExec validates an exec body into envd's StartRequest and the
// command's deadline. Only a streaming exec can write to stdin.
func parseExec(body io.Reader, streaming bool) (*rpc.StartRequest, string, time.Duration, error) {
	var req execRequest
	if err := decodeJSON(body, &req); err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("exec: %v: %w", err, errdefs.ErrInvalid)
		}
		return nil, "", 0, err
	}
	cfg := &rpc.ProcessConfig{Envs: req.Env}
	switch {
	case req.Cmd != "" && len(req.Args) > 0:
		return nil, "", 0, fmt.Errorf("exec: give cmd or args, not both: %w", errdefs.ErrInvalid)
	case req.Cmd != "":
		cfg.Cmd, cfg.Args = "/bin/bash", []string{"-l", "-c", req.Cmd}
	case len(req.Args) > 0 && req.Args[0] != "":
		cfg.Cmd, cfg.Args = req.Args[0], req.Args[1:]
	default:
		return nil, "", 0, fmt.Errorf("exec: cmd or args is required: %w", errdefs.ErrInvalid)
	}
	if req.Cwd != "" {
		cfg.Cwd = &req.Cwd
	}
	d := defaultExecTimeout
	if req.Timeout != nil && *req.Timeout != 0 {
		t := *req.Timeout
		if t < 0 || math.IsNaN(t) || t > maxTimeout.Seconds() {
			return nil, "", 0, fmt.Errorf("exec: timeout %v: want 0-%d seconds: %w", t, int64(maxTimeout.Seconds()), errdefs.ErrInvalid)
		}
		d = time.Duration(t * float64(time.Second))
	}
	if req.Stdin && !streaming {
		return nil, "", 0, fmt.Errorf("exec: stdin needs the streaming endpoint (GET .../exec/stream): %w", errdefs.ErrInvalid)
	}
	stdin := req.Stdin
	return &rpc.StartRequest{Process: cfg, Stdin: &stdin}, req.User, d, nil
}

// execSandbox is POST /v1/sandboxes/{id}/exec: it runs a command in the
// sandbox through envd's Process.Start and answers once it ends. The
// timeout is sent to envd as the call's deadline (Connect-Timeout-Ms),
// and envd kills the process when it passes.
func (s *Server) execSandbox(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	start, user, timeout, err := parseExec(r.Body, false)
	if err != nil {
		s.fail(w, r, "exec", err)
		return
	}
	_, t, err := s.runningSandbox(r, key)
	if err != nil {
		s.fail(w, r, "exec", err)
		return
	}
	res, err := s.exec(r.Context(), t, start, user, timeout)
	if err != nil {
		s.fail(w, r, "exec", err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// exec runs one command to its end, or its deadline.
func (s *Server) exec(ctx context.Context, t envdTarget, start *rpc.StartRequest, user string, timeout time.Duration) (execResponse, error) {
	limit := s.cfg.ExecOutputLimit
	client := processconnect.NewProcessClient(s.execClient, t.base, envdClientOptions(maxEnvdMessage)...)
	req := connect.NewRequest(start)
	for k, v := range t.header {
		req.Header()[k] = v
	}
	if user != "" {
		req.Header().Set("Authorization", basicUser(user))
	}
	began := time.Now()
	deadline := began.Add(timeout)
	cctx, cancel := context.WithDeadline(ctx, deadline.Add(execGrace))
	defer cancel()
	stream, err := client.Start(cctx, req)
	if err != nil {
		return execResponse{}, execError(t.sandboxID, err)
	}
	defer stream.Close()
	var res execResponse
	var stdout, stderr jsonBudget
	stdout.room, stderr.room = limit, limit
	ended := false
	// Read to the stream's end, past the end event: a response left
	// unread costs the connections to the agent and on to envd.
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		if d := ev.GetData(); d != nil {
			res.StdoutTruncated = stdout.keep(d.GetStdout()) || res.StdoutTruncated
			res.StderrTruncated = stderr.keep(d.GetStderr()) || res.StderrTruncated
		}
		if end := ev.GetEnd(); end != nil {
			ended = true
			res.ExitCode, res.Status, res.Error = end.GetExitCode(), end.GetStatus(), end.GetError()
			// Killed at (or after) the deadline: envd's kill raced the end.
			res.TimedOut = !end.GetExited() && !time.Now().Before(deadline)
		}
	}
	if err := stream.Err(); !ended {
		switch {
		case ctx.Err() != nil:
			return execResponse{}, fmt.Errorf("exec in sandbox %s: client gone: %w", t.sandboxID, ctx.Err())
		case cctx.Err() != nil || connect.CodeOf(err) == connect.CodeDeadlineExceeded:
			// envd killed the process at the deadline.
			res.TimedOut, res.ExitCode, res.Status = true, -1, "timed out"
		case connect.CodeOf(err) == connect.CodeResourceExhausted:
			// Only a tampered envd sends a message this large.
			return execResponse{}, fmt.Errorf("exec in sandbox %s: envd sent a message over %d bytes: %w", t.sandboxID, maxEnvdMessage, errdefs.ErrUnreachable)
		case err != nil:
			return execResponse{}, execError(t.sandboxID, err)
		default:
			return execResponse{}, fmt.Errorf("exec in sandbox %s: envd ended the stream without an end event: %w", t.sandboxID, errdefs.ErrUnreachable)
		}
	}
	res.Stdout, res.Stderr = string(stdout.buf), string(stderr.buf)
	res.DurationMs = time.Since(began).Milliseconds()
	return res, nil
}

// execError maps envd's refusals to the caller's mistakes (400: no such
// program, directory or user) and the rest to agentError's categories.
func execError(id string, err error) error {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodePermissionDenied:
		return fmt.Errorf("exec in sandbox %s: %s: %w", id, connectMessage(err), errdefs.ErrInvalid)
	}
	return fmt.Errorf("exec in sandbox %s: %w", id, errdefs.FromConnect("envd process start", err))
}

// connectMessage is a Connect error's message without its code prefix.
func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// jsonBudget keeps a command's output while its encoding in the JSON
// answer fits room bytes. Output is the sandbox's to choose, and a byte
// can take six as JSON ("\u0000"): counting the raw bytes would let an
// answer of 2 × limit grow to 12 ×.
type jsonBudget struct {
	buf  []byte
	room int
	cut  bool
}

// keep appends what of data fits, and reports whether any of it did not.
func (b *jsonBudget) keep(data []byte) bool {
	if b.cut {
		return len(data) > 0
	}
	n := 0
	for n < len(data) {
		c := data[n]
		cost, size := 1, 1
		switch {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
			cost = 2
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			cost = 6 // \u00XX: encoding/json escapes HTML characters too
		case c >= utf8.RuneSelf:
			r, sz := utf8.DecodeRune(data[n:])
			size, cost = sz, sz
			if r == utf8.RuneError || r == '\u2028' || r == '\u2029' {
				cost = 6 * sz // \ufffd per byte, or an escaped separator
			}
		}
		if cost > b.room {
			b.cut = true
			break
		}
		b.room -= cost
		n += size
	}
	b.buf = append(b.buf, data[:n]...)
	return b.cut
}
