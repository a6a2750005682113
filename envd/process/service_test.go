package process_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/envd/auth"
	"roost.dev/roost/envd/defaults"
	"roost.dev/roost/envd/process"
	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
)

func newClient(t *testing.T, opts ...connect.ClientOption) (processconnect.ProcessClient, *process.Service) {
	t.Helper()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	guard := auth.NewGuard(defaults.New(me.Username))
	svc := process.New(guard, slog.New(slog.DiscardHandler))
	path, h := processconnect.NewProcessHandler(svc)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		svc.Close()
	})
	return processconnect.NewProcessClient(srv.Client(), srv.URL, opts...), svc
}

// result is everything a stream delivered.
type result struct {
	pid    uint32
	stdout bytes.Buffer
	stderr bytes.Buffer
	pty    bytes.Buffer
	end    *rpc.ProcessEvent_EndEvent
	kinds  []string // event kinds in order, keepalives included
	err    error
}

func collect[T interface{ GetEvent() *rpc.ProcessEvent }](s interface {
	Receive() bool
	Msg() T
	Err() error
}) *result {
	r := &result{}
	for s.Receive() {
		ev := s.Msg().GetEvent()
		switch e := ev.GetEvent().(type) {
		case *rpc.ProcessEvent_Start:
			r.pid = e.Start.GetPid()
			r.kinds = append(r.kinds, "start")
		case *rpc.ProcessEvent_Data:
			r.stdout.Write(e.Data.GetStdout())
			r.stderr.Write(e.Data.GetStderr())
			r.pty.Write(e.Data.GetPty())
			r.kinds = append(r.kinds, "data")
		case *rpc.ProcessEvent_End:
			r.end = e.End
			r.kinds = append(r.kinds, "end")
		case *rpc.ProcessEvent_Keepalive:
			r.kinds = append(r.kinds, "keepalive")
		}
	}
	r.err = s.Err()
	return r
}

func run(t *testing.T, c processconnect.ProcessClient, cfg *rpc.ProcessConfig) *result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := c.Start(ctx, connect.NewRequest(&rpc.StartRequest{Process: cfg}))
	if err != nil {
		t.Fatal(err)
	}
	return collect[*rpc.StartResponse](stream)
}

func bash(script string) *rpc.ProcessConfig {
	return &rpc.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", script}}
}

func TestStartPipes(t *testing.T) {
	for name, opts := range map[string][]connect.ClientOption{
		"proto": nil,
		"json":  {connect.WithProtoJSON()},
	} {
		t.Run(name, func(t *testing.T) {
			c, _ := newClient(t, opts...)
			r := run(t, c, bash("echo out; echo err >&2; exit 3"))
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.kinds[0] != "start" || r.kinds[len(r.kinds)-1] != "end" {
				t.Fatalf("events %v: want start first and end last", r.kinds)
			}
			if r.pid == 0 {
				t.Fatal("start event has no pid")
			}
			if got := r.stdout.String(); got != "out\n" {
				t.Errorf("stdout %q", got)
			}
			if got := r.stderr.String(); got != "err\n" {
				t.Errorf("stderr %q", got)
			}
			if r.end.GetExitCode() != 3 || !r.end.GetExited() || r.end.GetStatus() != "exit status 3" || r.end.GetError() != "exit status 3" {
				t.Errorf("end %+v", r.end)
			}
		})
	}
}

func TestStartEnvCwdAndBinaryOutput(t *testing.T) {
	c, _ := newClient(t)
	dir := t.TempDir()
	cfg := bash(`printf '%s|%s|' "$FOO" "$PWD"; printf '\xff\xfe\x00'`)
	cfg.Envs = map[string]string{"FOO": "bar baz"}
	cfg.Cwd = &dir
	r := run(t, c, cfg)
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := "bar baz|" + dir + "|\xff\xfe\x00"
	if got := r.stdout.String(); got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
}

func TestStartBadInput(t *testing.T) {
	c, _ := newClient(t)
	missing := filepath.Join(t.TempDir(), "nope")
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	for name, tc := range map[string]struct {
		req  *rpc.StartRequest
		code connect.Code
	}{
		"no cmd":        {&rpc.StartRequest{Process: &rpc.ProcessConfig{}}, connect.CodeInvalidArgument},
		"no process":    {&rpc.StartRequest{}, connect.CodeInvalidArgument},
		"missing cwd":   {&rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "true", Cwd: &missing}}, connect.CodeInvalidArgument},
		"cwd is a file": {&rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "true", Cwd: &file}}, connect.CodeInvalidArgument},
		"no such cmd":   {&rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "/nonexistent/cmd"}}, connect.CodeInvalidArgument},
		"zero pty size": {&rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "true"}, Pty: &rpc.PTY{Size: &rpc.PTY_Size{}}}, connect.CodeInvalidArgument},
	} {
		t.Run(name, func(t *testing.T) {
			stream, err := c.Start(context.Background(), connect.NewRequest(tc.req))
			if err != nil {
				t.Fatal(err)
			}
			r := collect[*rpc.StartResponse](stream)
			if got := connect.CodeOf(r.err); got != tc.code {
				t.Fatalf("code %v (%v), want %v", got, r.err, tc.code)
			}
		})
	}
}

func TestSelectorsNotFound(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	byPid := &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: 999999}}
	byTag := &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Tag{Tag: "nope"}}
	for _, sel := range []*rpc.ProcessSelector{byPid, byTag} {
		_, err := c.SendSignal(ctx, connect.NewRequest(&rpc.SendSignalRequest{Process: sel, Signal: rpc.Signal_SIGNAL_SIGKILL}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("SendSignal %v: %v", sel, err)
		}
		_, err = c.SendInput(ctx, connect.NewRequest(&rpc.SendInputRequest{Process: sel}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("SendInput %v: %v", sel, err)
		}
		_, err = c.Update(ctx, connect.NewRequest(&rpc.UpdateRequest{Process: sel}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("Update %v: %v", sel, err)
		}
		_, err = c.CloseStdin(ctx, connect.NewRequest(&rpc.CloseStdinRequest{Process: sel}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("CloseStdin %v: %v", sel, err)
		}
		stream, err := c.Connect(ctx, connect.NewRequest(&rpc.ConnectRequest{Process: sel}))
		if err != nil {
			t.Fatal(err)
		}
		if r := collect[*rpc.ConnectResponse](stream); connect.CodeOf(r.err) != connect.CodeNotFound {
			t.Errorf("Connect %v: %v", sel, r.err)
		}
	}
	_, err := c.SendSignal(ctx, connect.NewRequest(&rpc.SendSignalRequest{}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("SendSignal without selector: %v", err)
	}
}

// started starts a process in the background and returns its pid and the
// stream's result, delivered when the stream ends.
func started(t *testing.T, c processconnect.ProcessClient, req *rpc.StartRequest, hdr map[string]string) (uint32, <-chan *result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	creq := connect.NewRequest(req)
	for k, v := range hdr {
		creq.Header().Set(k, v)
	}
	stream, err := c.Start(ctx, creq)
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatalf("no start event: %v", stream.Err())
	}
	pid := stream.Msg().GetEvent().GetStart().GetPid()
	if pid == 0 {
		t.Fatalf("first event is not start: %v", stream.Msg())
	}
	done := make(chan *result, 1)
	go func() {
		r := collect[*rpc.StartResponse](stream)
		r.pid = pid
		done <- r
	}()
	return pid, done
}

func wait(t *testing.T, ch <-chan *result) *result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("stream did not end")
		return nil
	}
}

func pidSel(pid uint32) *rpc.ProcessSelector {
	return &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Pid{Pid: pid}}
}

func TestStdinSendStreamClose(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	pid, done := started(t, c, &rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "cat"}}, nil)

	if _, err := c.SendInput(ctx, connect.NewRequest(&rpc.SendInputRequest{
		Process: pidSel(pid), Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: []byte("one\n")}},
	})); err != nil {
		t.Fatal(err)
	}
	in := c.StreamInput(ctx)
	msgs := []*rpc.StreamInputRequest{
		{Event: &rpc.StreamInputRequest_Start{Start: &rpc.StreamInputRequest_StartEvent{Process: pidSel(pid)}}},
		{Event: &rpc.StreamInputRequest_Data{Data: &rpc.StreamInputRequest_DataEvent{Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: []byte("two\n")}}}}},
		{Event: &rpc.StreamInputRequest_Keepalive{Keepalive: &rpc.StreamInputRequest_KeepAlive{}}},
		{Event: &rpc.StreamInputRequest_Data{Data: &rpc.StreamInputRequest_DataEvent{Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: []byte("three\n")}}}}},
	}
	for _, m := range msgs {
		if err := in.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := in.CloseAndReceive(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CloseStdin(ctx, connect.NewRequest(&rpc.CloseStdinRequest{Process: pidSel(pid)})); err != nil {
		t.Fatal(err)
	}
	r := wait(t, done)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := r.stdout.String(); got != "one\ntwo\nthree\n" {
		t.Errorf("stdout %q", got)
	}
	if r.end.GetExitCode() != 0 {
		t.Errorf("end %+v", r.end)
	}
	// Input to a finished process is refused with a clear code.
	_, err := c.SendInput(ctx, connect.NewRequest(&rpc.SendInputRequest{
		Process: pidSel(pid), Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Stdin{Stdin: []byte("x")}},
	}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("input after exit: %v", err)
	}
}

func TestStreamInputMustStart(t *testing.T) {
	c, _ := newClient(t)
	in := c.StreamInput(context.Background())
	in.Send(&rpc.StreamInputRequest{Event: &rpc.StreamInputRequest_Data{Data: &rpc.StreamInputRequest_DataEvent{}}})
	_, err := in.CloseAndReceive()
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("got %v", err)
	}
}

func TestStdinDisabled(t *testing.T) {
	c, _ := newClient(t)
	off := false
	r := func() *result {
		stream, err := c.Start(context.Background(), connect.NewRequest(&rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "cat"}, Stdin: &off}))
		if err != nil {
			t.Fatal(err)
		}
		return collect[*rpc.StartResponse](stream)
	}()
	// cat reads /dev/null and exits at once.
	if r.err != nil || r.end.GetExitCode() != 0 {
		t.Fatalf("err %v end %+v", r.err, r.end)
	}
}

func TestKillSendsEnd(t *testing.T) {
	c, _ := newClient(t)
	pid, done := started(t, c, &rpc.StartRequest{Process: bash("sleep 100")}, nil)
	if _, err := c.SendSignal(context.Background(), connect.NewRequest(&rpc.SendSignalRequest{Process: pidSel(pid), Signal: rpc.Signal_SIGNAL_SIGKILL})); err != nil {
		t.Fatal(err)
	}
	// By the answer the process is reaped, not a zombie kill -0 finds.
	if err := syscall.Kill(int(pid), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill -0 %d right after SIGKILL's answer: %v, want ESRCH", pid, err)
	}
	r := wait(t, done)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.end.GetExited() || r.end.GetExitCode() != -1 || r.end.GetStatus() != "signal: killed" {
		t.Errorf("end %+v", r.end)
	}
}

func TestSigtermAndTagAndList(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	tag := "server-1"
	pid, done := started(t, c, &rpc.StartRequest{Process: bash("sleep 100"), Tag: &tag}, nil)

	list, err := c.List(ctx, connect.NewRequest(&rpc.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Msg.Processes) != 1 || list.Msg.Processes[0].GetPid() != pid || list.Msg.Processes[0].GetTag() != tag ||
		list.Msg.Processes[0].GetConfig().GetCmd() != "/bin/bash" {
		t.Fatalf("list %v", list.Msg.Processes)
	}
	// A second process may not take a running process's tag.
	stream, _ := c.Start(ctx, connect.NewRequest(&rpc.StartRequest{Process: bash("true"), Tag: &tag}))
	if r := collect[*rpc.StartResponse](stream); connect.CodeOf(r.err) != connect.CodeAlreadyExists {
		t.Fatalf("duplicate tag: %v", r.err)
	}
	sel := &rpc.ProcessSelector{Selector: &rpc.ProcessSelector_Tag{Tag: tag}}
	if _, err := c.SendSignal(ctx, connect.NewRequest(&rpc.SendSignalRequest{Process: sel, Signal: rpc.Signal_SIGNAL_SIGTERM})); err != nil {
		t.Fatal(err)
	}
	r := wait(t, done)
	if r.end.GetStatus() != "signal: terminated" {
		t.Errorf("end %+v", r.end)
	}
	list, _ = c.List(ctx, connect.NewRequest(&rpc.ListRequest{}))
	if len(list.Msg.Processes) != 0 {
		t.Errorf("finished process listed: %v", list.Msg.Processes)
	}
	// A late Connect still gets start and the end status.
	cs, err := c.Connect(ctx, connect.NewRequest(&rpc.ConnectRequest{Process: sel}))
	if err != nil {
		t.Fatal(err)
	}
	late := collect[*rpc.ConnectResponse](cs)
	if late.err != nil || late.pid != pid || late.end.GetStatus() != "signal: terminated" {
		t.Fatalf("late connect: %+v err %v", late, late.err)
	}
	if _, err := c.SendSignal(ctx, connect.NewRequest(&rpc.SendSignalRequest{Process: sel, Signal: rpc.Signal_SIGNAL_SIGKILL})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("signal to a finished process: %v", err)
	}
}

func TestPTYResizeAndReattach(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	req := &rpc.StartRequest{
		Process: &rpc.ProcessConfig{Cmd: "/bin/bash", Args: []string{"--norc", "--noprofile", "-i"}, Envs: map[string]string{"PS1": "$ ", "TERM": "xterm"}},
		Pty:     &rpc.PTY{Size: &rpc.PTY_Size{Cols: 80, Rows: 24}},
	}
	sctx, cancelStart := context.WithCancel(ctx)
	stream, err := c.Start(sctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatal(stream.Err())
	}
	pid := stream.Msg().GetEvent().GetStart().GetPid()
	send := func(s string) {
		t.Helper()
		if _, err := c.SendInput(ctx, connect.NewRequest(&rpc.SendInputRequest{
			Process: pidSel(pid), Input: &rpc.ProcessInput{Input: &rpc.ProcessInput_Pty{Pty: []byte(s)}},
		})); err != nil {
			t.Fatal(err)
		}
	}
	var seen bytes.Buffer
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(seen.String(), want) {
			if time.Now().After(deadline) || !stream.Receive() {
				t.Fatalf("did not see %q in %q (%v)", want, seen.String(), stream.Err())
			}
			seen.Write(stream.Msg().GetEvent().GetData().GetPty())
		}
	}
	send("stty size\n")
	waitFor("24 80")
	if _, err := c.Update(ctx, connect.NewRequest(&rpc.UpdateRequest{Process: pidSel(pid), Pty: &rpc.PTY{Size: &rpc.PTY_Size{Cols: 132, Rows: 50}}})); err != nil {
		t.Fatal(err)
	}
	send("stty size; echo scroll-$((6*7))\n")
	waitFor("scroll-42")
	if !strings.Contains(seen.String(), "50 132") {
		t.Fatalf("resize not seen: %q", seen.String())
	}
	// Detach; the shell keeps running and its output goes to the scrollback.
	cancelStart()
	send("echo after-detach-$((2*21))\n")
	time.Sleep(300 * time.Millisecond)

	cs, err := c.Connect(ctx, connect.NewRequest(&rpc.ConnectRequest{Process: pidSel(pid)}))
	if err != nil {
		t.Fatal(err)
	}
	if !cs.Receive() || cs.Msg().GetEvent().GetStart().GetPid() != pid {
		t.Fatalf("reattach: first event %v (%v)", cs.Msg(), cs.Err())
	}
	var back bytes.Buffer
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(back.String(), "after-detach-42") {
		if time.Now().After(deadline) || !cs.Receive() {
			t.Fatalf("scrollback lacks detached output: %q (%v)", back.String(), cs.Err())
		}
		back.Write(cs.Msg().GetEvent().GetData().GetPty())
	}
	if !strings.Contains(back.String(), "scroll-42") {
		t.Errorf("scrollback lacks earlier output: %q", back.String())
	}
	send("exit 7\n")
	var end *rpc.ProcessEvent_EndEvent
	for cs.Receive() {
		if e := cs.Msg().GetEvent().GetEnd(); e != nil {
			end = e
		}
	}
	if end.GetExitCode() != 7 {
		t.Fatalf("end %+v (%v)", end, cs.Err())
	}
}

func TestCloseStdinOnPTY(t *testing.T) {
	c, _ := newClient(t)
	pid, done := started(t, c, &rpc.StartRequest{Process: bash("sleep 100"), Pty: &rpc.PTY{}}, nil)
	_, err := c.CloseStdin(context.Background(), connect.NewRequest(&rpc.CloseStdinRequest{Process: pidSel(pid)}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("got %v", err)
	}
	_, err = c.Update(context.Background(), connect.NewRequest(&rpc.UpdateRequest{Process: pidSel(pid), Pty: &rpc.PTY{Size: &rpc.PTY_Size{Cols: 0, Rows: 5}}}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("zero size: %v", err)
	}
	c.SendSignal(context.Background(), connect.NewRequest(&rpc.SendSignalRequest{Process: pidSel(pid), Signal: rpc.Signal_SIGNAL_SIGKILL}))
	wait(t, done)
}

func TestUpdateWithoutPTY(t *testing.T) {
	c, _ := newClient(t)
	pid, done := started(t, c, &rpc.StartRequest{Process: bash("sleep 100")}, nil)
	_, err := c.Update(context.Background(), connect.NewRequest(&rpc.UpdateRequest{Process: pidSel(pid), Pty: &rpc.PTY{Size: &rpc.PTY_Size{Cols: 10, Rows: 5}}}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("got %v", err)
	}
	c.SendSignal(context.Background(), connect.NewRequest(&rpc.SendSignalRequest{Process: pidSel(pid), Signal: rpc.Signal_SIGNAL_SIGKILL}))
	wait(t, done)
}

func TestKeepalive(t *testing.T) {
	c, _ := newClient(t)
	_, done := started(t, c, &rpc.StartRequest{Process: bash("sleep 2.5")}, map[string]string{process.KeepaliveHeader: "1"})
	r := wait(t, done)
	n := strings.Count(strings.Join(r.kinds, " "), "keepalive")
	if n < 2 || r.kinds[len(r.kinds)-1] != "end" {
		t.Fatalf("events %v: want ≥2 keepalives then end", r.kinds)
	}
}

func TestTimeoutKillsProcess(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	req := connect.NewRequest(&rpc.StartRequest{Process: bash("echo up; sleep 100")})
	tctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancel()
	s2, err := c.Start(tctx, req)
	if err != nil {
		t.Fatal(err)
	}
	r := collect[*rpc.StartResponse](s2)
	if connect.CodeOf(r.err) != connect.CodeDeadlineExceeded {
		t.Fatalf("got %v", r.err)
	}
	// The process was killed at the deadline: it finishes and leaves the list.
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := c.List(ctx, connect.NewRequest(&rpc.ListRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		running := false
		for _, p := range list.Msg.Processes {
			running = running || p.GetPid() == r.pid
		}
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("process outlived its deadline")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBackgroundChildDoesNotHoldStream(t *testing.T) {
	c, _ := newClient(t)
	start := time.Now()
	r := run(t, c, bash("sleep 30 & echo started"))
	if r.err != nil || r.stdout.String() != "started\n" {
		t.Fatalf("err %v stdout %q", r.err, r.stdout.String())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("stream held open by a background child for %v", d)
	}
}

// A slow reader gets every byte: output back-pressures the process.
func TestSlowReaderGetsEverything(t *testing.T) {
	c, _ := newClient(t)
	const size = 64 << 20
	stream, err := c.Start(context.Background(), connect.NewRequest(&rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "head", Args: []string{"-c", fmt.Sprint(size), "/dev/zero"}}}))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var end *rpc.ProcessEvent_EndEvent
	for i := 0; stream.Receive(); i++ {
		n += len(stream.Msg().GetEvent().GetData().GetStdout())
		if e := stream.Msg().GetEvent().GetEnd(); e != nil {
			end = e
		}
		if i < 50 {
			time.Sleep(20 * time.Millisecond) // slow at first, so the queue fills
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if n != size || end.GetExitCode() != 0 {
		t.Fatalf("got %d of %d bytes, end %+v", n, size, end)
	}
}

func TestRunAsOtherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running as another user needs root")
	}
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip("no user nobody")
	}
	c, _ := newClient(t)
	req := connect.NewRequest(&rpc.StartRequest{Process: bash("id -un; echo $HOME")})
	req.Header().Set("Authorization", "Basic bm9ib2R5Og==") // nobody:
	stream, err := c.Start(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	r := collect[*rpc.StartResponse](stream)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if lines := strings.Split(r.stdout.String(), "\n"); lines[0] != "nobody" {
		t.Fatalf("stdout %q", r.stdout.String())
	}
	req = connect.NewRequest(&rpc.StartRequest{Process: bash("true")})
	req.Header().Set("Authorization", "Basic bm8tc3VjaC11c2VyOg==") // no-such-user:
	stream, _ = c.Start(context.Background(), req)
	if r := collect[*rpc.StartResponse](stream); connect.CodeOf(r.err) != connect.CodeInvalidArgument {
		t.Fatalf("unknown user: %v", r.err)
	}
}
