package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/envd/auth"
	"roost.dev/roost/envd/identity"
	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
)

const (
	// Retention is how long a finished process's end event stays available
	// to a late Connect.
	Retention = 60 * time.Second
	// KeepaliveHeader carries the seconds between KeepAlive events.
	KeepaliveHeader = "Keepalive-Ping-Interval"
	// defaultKeepalive applies when a client sends no KeepaliveHeader;
	// it keeps idle streams alive through proxies with idle timeouts.
	defaultKeepalive = 50 * time.Second
	defaultPath      = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Service is the process.Process Connect service.
type Service struct {
	guard *auth.Guard
	log   *slog.Logger

	mu    sync.Mutex // guards procs and tags
	procs map[uint32]*proc
	tags  map[string]*proc
}

var _ processconnect.ProcessHandler = (*Service)(nil)

// New returns a Service whose requests run as the users guard resolves.
func New(guard *auth.Guard, log *slog.Logger) *Service {
	return &Service{guard: guard, log: log, procs: map[uint32]*proc{}, tags: map[string]*proc{}}
}

// Close kills every process the service started that is still running.
func (s *Service) Close() error {
	s.mu.Lock()
	running := make([]*proc, 0, len(s.procs))
	for _, p := range s.procs {
		running = append(running, p)
	}
	s.mu.Unlock()
	for _, p := range running {
		_ = p.signal(syscall.SIGKILL)
	}
	for _, p := range running {
		select {
		case <-p.done:
		case <-time.After(2 * time.Second):
		}
	}
	return nil
}

// Start launches a process and streams its events until it ends. When the
// request carries a deadline (Connect-Timeout-Ms), the process is killed
// when it passes; a client that merely goes away leaves it running.
func (s *Service) Start(ctx context.Context, req *connect.Request[rpc.StartRequest], stream *connect.ServerStream[rpc.StartResponse]) error {
	m := req.Msg
	if m.GetProcess().GetCmd() == "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("process.cmd is required"))
	}
	if m.Pty != nil && m.Pty.Size != nil && (m.Pty.Size.Cols == 0 || m.Pty.Size.Rows == 0 || m.Pty.Size.Cols > 0xffff || m.Pty.Size.Rows > 0xffff) {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid pty size %dx%d", m.Pty.Size.Cols, m.Pty.Size.Rows))
	}
	user, err := s.guard.ConnectUser(req.Header())
	if err != nil {
		return err
	}
	sp := spec{config: m.Process, tag: m.GetTag(), cred: user.Credential(), stdin: m.Stdin == nil || *m.Stdin}
	if sp.cred != nil && os.Geteuid() != 0 {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("envd runs unprivileged and cannot run processes as %q", user.Name))
	}
	if m.Pty != nil {
		sp.pty = m.Pty.GetSize()
		if sp.pty == nil {
			sp.pty = &rpc.PTY_Size{Cols: 80, Rows: 24}
		}
	}
	if sp.dir, err = s.workdir(user, m.Process.Cwd); err != nil {
		return err
	}
	sp.env = s.environ(user, sp.dir, m.Process.GetEnvs())

	s.mu.Lock()
	if sp.tag != "" {
		if other, ok := s.tags[sp.tag]; ok && !other.out.ended() {
			s.mu.Unlock()
			return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("a running process already has tag %q", sp.tag))
		}
	}
	p, sub, err := start(sp, s.log)
	if err != nil {
		s.mu.Unlock()
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("start %s: %w", sp.config.GetCmd(), err))
		}
		if errors.Is(err, os.ErrPermission) {
			return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("start %s: %w", sp.config.GetCmd(), err))
		}
		return connect.NewError(connect.CodeInternal, fmt.Errorf("start %s: %w", sp.config.GetCmd(), err))
	}
	s.procs[p.pid] = p
	if p.tag != "" {
		s.tags[p.tag] = p
	}
	s.mu.Unlock()
	go s.forget(p)
	p.log.Debug("process started", "cmd", sp.config.GetCmd(), "user", user.Name, "pty", sp.pty != nil)

	if deadline, ok := ctx.Deadline(); ok {
		go p.killAt(deadline)
	}
	send := func(ev *rpc.ProcessEvent) error { return stream.Send(&rpc.StartResponse{Event: ev}) }
	return s.relay(ctx, req.Header(), p, sub, nil, nil, send)
}

// killAt kills the process group when deadline passes, unless it ended.
func (p *proc) killAt(deadline time.Time) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-t.C:
		if err := p.signal(syscall.SIGKILL); err == nil {
			p.log.Debug("process killed at its deadline")
		}
	case <-p.done:
	}
}

// forget drops a finished process from the table after Retention.
func (s *Service) forget(p *proc) {
	<-p.done
	time.AfterFunc(Retention, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.procs[p.pid] == p {
			delete(s.procs, p.pid)
		}
		if p.tag != "" && s.tags[p.tag] == p {
			delete(s.tags, p.tag)
		}
	})
}

// Connect reattaches to a process: start, the PTY scrollback, then live
// events, or the end event alone for a process that already finished.
func (s *Service) Connect(ctx context.Context, req *connect.Request[rpc.ConnectRequest], stream *connect.ServerStream[rpc.ConnectResponse]) error {
	p, err := s.find(req.Msg.GetProcess())
	if err != nil {
		return err
	}
	sub, backlog, end := p.out.attach()
	send := func(ev *rpc.ProcessEvent) error { return stream.Send(&rpc.ConnectResponse{Event: ev}) }
	return s.relay(ctx, req.Header(), p, sub, backlog, end, send)
}

// relay writes one stream: start, backlog, live events with keepalives, end.
func (s *Service) relay(ctx context.Context, h http.Header, p *proc, sub *subscriber, backlog []byte, end *rpc.ProcessEvent_EndEvent, send func(*rpc.ProcessEvent) error) error {
	if sub != nil {
		defer p.out.detach(sub)
	}
	if err := send(&rpc.ProcessEvent{Event: &rpc.ProcessEvent_Start{Start: &rpc.ProcessEvent_StartEvent{Pid: p.pid}}}); err != nil {
		return err
	}
	for len(backlog) > 0 {
		n := min(len(backlog), chunkSize)
		data := &rpc.ProcessEvent_DataEvent{Output: &rpc.ProcessEvent_DataEvent_Pty{Pty: backlog[:n]}}
		if err := send(&rpc.ProcessEvent{Event: &rpc.ProcessEvent_Data{Data: data}}); err != nil {
			return err
		}
		backlog = backlog[n:]
	}
	if sub == nil {
		return send(&rpc.ProcessEvent{Event: &rpc.ProcessEvent_End{End: end}})
	}
	ticker := time.NewTicker(keepaliveInterval(h.Get(KeepaliveHeader)))
	defer ticker.Stop()
	for {
		select {
		case ev, ok := <-sub.events:
			if !ok {
				return nil // the end event was the last one sent
			}
			if err := send(ev); err != nil {
				return err
			}
		case <-ticker.C:
			if err := send(&rpc.ProcessEvent{Event: &rpc.ProcessEvent_Keepalive{Keepalive: &rpc.ProcessEvent_KeepAlive{}}}); err != nil {
				return err
			}
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return connect.NewError(connect.CodeDeadlineExceeded, errors.New("stream deadline exceeded"))
			}
			return connect.NewError(connect.CodeCanceled, ctx.Err())
		}
	}
}

func keepaliveInterval(v string) time.Duration {
	secs, err := strconv.Atoi(v)
	if err != nil || secs <= 0 {
		return defaultKeepalive
	}
	return time.Duration(secs) * time.Second
}

// List returns the processes that are still running.
func (s *Service) List(ctx context.Context, req *connect.Request[rpc.ListRequest]) (*connect.Response[rpc.ListResponse], error) {
	s.mu.Lock()
	out := make([]*rpc.ProcessInfo, 0, len(s.procs))
	for _, p := range s.procs {
		if !p.out.ended() {
			out = append(out, p.info())
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Pid < out[j].Pid })
	return connect.NewResponse(&rpc.ListResponse{Processes: out}), nil
}

// Update resizes a process's PTY.
func (s *Service) Update(ctx context.Context, req *connect.Request[rpc.UpdateRequest]) (*connect.Response[rpc.UpdateResponse], error) {
	p, err := s.findRunning(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	size := req.Msg.GetPty().GetSize()
	if size == nil {
		return connect.NewResponse(&rpc.UpdateResponse{}), nil
	}
	if size.Cols == 0 || size.Rows == 0 || size.Cols > 0xffff || size.Rows > 0xffff {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid pty size %dx%d", size.Cols, size.Rows))
	}
	if err := p.resize(size); err != nil {
		return nil, procError(err)
	}
	return connect.NewResponse(&rpc.UpdateResponse{}), nil
}

// SendInput writes one chunk of input.
func (s *Service) SendInput(ctx context.Context, req *connect.Request[rpc.SendInputRequest]) (*connect.Response[rpc.SendInputResponse], error) {
	p, err := s.findRunning(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.write(inputBytes(req.Msg.GetInput())); err != nil {
		return nil, procError(err)
	}
	return connect.NewResponse(&rpc.SendInputResponse{}), nil
}

// StreamInput takes a start event naming the process, then input chunks.
func (s *Service) StreamInput(ctx context.Context, stream *connect.ClientStream[rpc.StreamInputRequest]) (*connect.Response[rpc.StreamInputResponse], error) {
	var p *proc
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *rpc.StreamInputRequest_Start:
			if p != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("stream already started"))
			}
			found, err := s.findRunning(ev.Start.GetProcess())
			if err != nil {
				return nil, err
			}
			p = found
		case *rpc.StreamInputRequest_Data:
			if p == nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("the first event must be start"))
			}
			if err := p.write(inputBytes(ev.Data.GetInput())); err != nil {
				return nil, procError(err)
			}
		case *rpc.StreamInputRequest_Keepalive:
		default:
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("empty stream input event"))
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&rpc.StreamInputResponse{}), nil
}

func inputBytes(in *rpc.ProcessInput) []byte {
	if b := in.GetPty(); b != nil {
		return b
	}
	return in.GetStdin()
}

// SendSignal delivers SIGTERM or SIGKILL to the process group; after
// SIGKILL it answers once the process has been reaped (at most killWait).
func (s *Service) SendSignal(ctx context.Context, req *connect.Request[rpc.SendSignalRequest]) (*connect.Response[rpc.SendSignalResponse], error) {
	var sig syscall.Signal
	switch req.Msg.GetSignal() {
	case rpc.Signal_SIGNAL_SIGTERM:
		sig = syscall.SIGTERM
	case rpc.Signal_SIGNAL_SIGKILL:
		sig = syscall.SIGKILL
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("unsupported signal %v", req.Msg.GetSignal()))
	}
	p, err := s.findRunning(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.signal(sig); err != nil {
		return nil, procError(err)
	}
	if sig == syscall.SIGKILL {
		// Answer once the process is gone, not while it is a zombie that
		// `kill -0 PID` still finds (E2B's SDK tests check right after).
		select {
		case <-p.exited:
		case <-time.After(killWait):
		case <-ctx.Done():
		}
	}
	return connect.NewResponse(&rpc.SendSignalResponse{}), nil
}

// killWait bounds how long SendSignal waits for a killed process to be
// reaped (a process in uninterruptible sleep dies late).
const killWait = time.Second

// CloseStdin closes a process's stdin so it reads EOF.
func (s *Service) CloseStdin(ctx context.Context, req *connect.Request[rpc.CloseStdinRequest]) (*connect.Response[rpc.CloseStdinResponse], error) {
	p, err := s.findRunning(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if p.tty != nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("a pty process has no separate stdin to close; send ^D (0x04) as input"))
	}
	p.closeStdin()
	return connect.NewResponse(&rpc.CloseStdinResponse{}), nil
}

// findRunning resolves a selector to a running process. A process that has
// finished is not_found here, as clients expect (kill of an ended command
// reports false); Connect still reaches it through find.
func (s *Service) findRunning(sel *rpc.ProcessSelector) (*proc, error) {
	p, err := s.find(sel)
	if err != nil {
		return nil, err
	}
	if p.out.ended() {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process %d has exited", p.pid))
	}
	return p, nil
}

// find resolves a selector to a process, running or recently finished.
func (s *Service) find(sel *rpc.ProcessSelector) (*proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch v := sel.GetSelector().(type) {
	case *rpc.ProcessSelector_Pid:
		if p, ok := s.procs[v.Pid]; ok {
			return p, nil
		}
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with pid %d not found", v.Pid))
	case *rpc.ProcessSelector_Tag:
		if p, ok := s.tags[v.Tag]; ok {
			return p, nil
		}
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with tag %q not found", v.Tag))
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("a process selector (pid or tag) is required"))
	}
}

// procError maps a process operation's error to a Connect error.
func procError(err error) error {
	switch {
	case errors.Is(err, errExited):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, errNoStdin), errors.Is(err, errNoPTY):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, syscall.EPIPE), errors.Is(err, os.ErrClosed):
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process no longer reads its input: %w", err))
	case errors.Is(err, syscall.ESRCH):
		return connect.NewError(connect.CodeNotFound, errExited)
	default:
		return connect.NewError(connect.CodeInternal, err)
	}
}

// workdir resolves the requested cwd (relative to home) or the default.
func (s *Service) workdir(user identity.User, cwd *string) (string, error) {
	if cwd == nil || *cwd == "" {
		// The default directory may not exist (a system user's home is
		// often /nonexistent); start in / then, as a login would.
		dir := s.guard.Workdir(user)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return "/", nil
		}
		return dir, nil
	}
	dir, err := user.Resolve(*cwd)
	if err != nil {
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd: %w", err))
	}
	st, err := os.Stat(dir)
	switch {
	case err != nil && errors.Is(err, os.ErrNotExist):
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd %s does not exist", dir))
	case err != nil:
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd: %w", err))
	case !st.IsDir():
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd %s is not a directory", dir))
	}
	return dir, nil
}

// environ builds a process's environment: the sandbox defaults, the user's
// identity, then the request's own variables, which win.
func (s *Service) environ(user identity.User, dir string, extra map[string]string) []string {
	env := s.guard.Defaults().Envs()
	env["HOME"] = user.Home
	env["USER"] = user.Name
	env["LOGNAME"] = user.Name
	env["PWD"] = dir
	if env["PATH"] == "" {
		env["PATH"] = defaultPath
	}
	for k, v := range extra {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}
