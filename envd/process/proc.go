package process

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	rpc "roost.dev/roost/gen/process"
)

const (
	// chunkSize bounds one data event. Reads return as soon as any bytes are
	// available, so a keystroke echo is never held back to fill a chunk.
	chunkSize = 32 << 10
	// scrollbackSize is how much PTY output a reattaching client receives.
	scrollbackSize = 256 << 10
	// drainAfterExit is how long output is still read after the process
	// exits: long enough for what it wrote last, short enough that a
	// background child holding the pipe open does not keep the stream open.
	drainAfterExit = 300 * time.Millisecond
)

var errExited = errors.New("process has exited")

// proc is one process started by the service.
type proc struct {
	pid    uint32
	tag    string
	config *rpc.ProcessConfig
	log    *slog.Logger
	cmd    *exec.Cmd
	out    *output

	tty *os.File // PTY master; nil for pipe processes

	stdinMu sync.Mutex // guards stdin
	stdin   *os.File   // write end of the stdin pipe; nil when closed or disabled

	exited chan struct{} // closed once the process has been reaped
	done   chan struct{} // closed after the end event is published
}

// spec is what start needs beyond the wire config.
type spec struct {
	config *rpc.ProcessConfig
	tag    string
	env    []string
	dir    string
	cred   *syscall.Credential
	pty    *rpc.PTY_Size // nil: pipes
	stdin  bool
}

// start launches the process and its output readers. sub, attached before
// the first byte of output exists, is the starting stream's subscription.
func start(s spec, log *slog.Logger) (*proc, *subscriber, error) {
	cmd := exec.Command(s.config.GetCmd(), s.config.GetArgs()...)
	cmd.Env = s.env
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: s.cred}

	p := &proc{tag: s.tag, config: s.config, cmd: cmd, exited: make(chan struct{}), done: make(chan struct{})}
	var (
		readers         []*os.File
		kinds           []func([]byte) *rpc.ProcessEvent_DataEvent
		closeAfterStart []*os.File
	)
	fail := func(err error) (*proc, *subscriber, error) {
		for _, f := range closeAfterStart {
			f.Close()
		}
		if p.stdin != nil {
			p.stdin.Close()
		}
		for _, r := range readers {
			r.Close() // the PTY master among them
		}
		return nil, nil, err
	}

	if s.pty != nil {
		master, slave, err := pty.Open()
		if err != nil {
			return fail(fmt.Errorf("open pty: %w", err))
		}
		p.tty = master
		closeAfterStart = append(closeAfterStart, slave)
		size := &pty.Winsize{Cols: uint16(s.pty.GetCols()), Rows: uint16(s.pty.GetRows())}
		if size.Cols == 0 || size.Rows == 0 {
			size.Cols, size.Rows = 80, 24
		}
		if err := pty.Setsize(master, size); err != nil {
			return fail(fmt.Errorf("size pty: %w", err))
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr.Setctty = true
		readers = append(readers, master)
		kinds = append(kinds, func(b []byte) *rpc.ProcessEvent_DataEvent {
			return &rpc.ProcessEvent_DataEvent{Output: &rpc.ProcessEvent_DataEvent_Pty{Pty: b}}
		})
		p.out = newOutput(scrollbackSize)
	} else {
		outR, outW, err := os.Pipe()
		if err != nil {
			return fail(fmt.Errorf("stdout pipe: %w", err))
		}
		readers = append(readers, outR)
		closeAfterStart = append(closeAfterStart, outW)
		errR, errW, err := os.Pipe()
		if err != nil {
			return fail(fmt.Errorf("stderr pipe: %w", err))
		}
		readers = append(readers, errR)
		closeAfterStart = append(closeAfterStart, errW)
		cmd.Stdout, cmd.Stderr = outW, errW
		kinds = append(kinds,
			func(b []byte) *rpc.ProcessEvent_DataEvent {
				return &rpc.ProcessEvent_DataEvent{Output: &rpc.ProcessEvent_DataEvent_Stdout{Stdout: b}}
			},
			func(b []byte) *rpc.ProcessEvent_DataEvent {
				return &rpc.ProcessEvent_DataEvent{Output: &rpc.ProcessEvent_DataEvent_Stderr{Stderr: b}}
			})
		if s.stdin {
			inR, inW, err := os.Pipe()
			if err != nil {
				return fail(fmt.Errorf("stdin pipe: %w", err))
			}
			cmd.Stdin = inR
			closeAfterStart = append(closeAfterStart, inR)
			p.stdin = inW
		}
		p.out = newOutput(0)
	}

	sub, _, _ := p.out.attach()
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	for _, f := range closeAfterStart {
		f.Close()
	}
	p.pid = uint32(cmd.Process.Pid)
	p.log = log.With("pid", p.pid)

	var wg sync.WaitGroup
	for i, r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.pump(r, kinds[i], p.exited)
		}()
	}
	go p.wait(&wg)
	return p, sub, nil
}

// pump copies one output stream into data events until EOF, or until
// drainAfterExit after the process exited.
func (p *proc) pump(f *os.File, kind func([]byte) *rpc.ProcessEvent_DataEvent, exited <-chan struct{}) {
	defer f.Close()
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("output reader panicked", "panic", r)
		}
	}()
	go func() {
		<-exited
		// A pollable pipe or PTY honours deadlines; once it passes, Read
		// returns and the reader ends even if a grandchild holds it open.
		_ = f.SetReadDeadline(time.Now().Add(drainAfterExit))
	}()
	for {
		buf := make([]byte, chunkSize)
		n, err := f.Read(buf)
		if n > 0 {
			p.out.publish(kind(buf[:n]), buf[:n])
		}
		if err != nil {
			return // EOF, EIO from a PTY whose last slave closed, or the deadline
		}
	}
}

// wait reaps the process, lets the readers drain, and publishes the end.
func (p *proc) wait(readers *sync.WaitGroup) {
	err := p.cmd.Wait()
	close(p.exited)
	readers.Wait()
	p.closeStdin()
	p.out.finish(endEvent(p.cmd.ProcessState, err))
	close(p.done)
	p.log.Debug("process ended", "status", p.cmd.ProcessState.String())
}

func endEvent(st *os.ProcessState, waitErr error) *rpc.ProcessEvent_EndEvent {
	end := &rpc.ProcessEvent_EndEvent{ExitCode: -1}
	if st != nil {
		end.ExitCode = int32(st.ExitCode())
		end.Exited = st.Exited()
		end.Status = st.String()
	}
	// Clients show error as the reason a command failed ("exit status 3",
	// "signal: killed"); a clean exit has none.
	if waitErr != nil {
		msg := waitErr.Error()
		end.Error = &msg
	}
	return end
}

// write sends input to the process's stdin or PTY.
func (p *proc) write(b []byte) error {
	if p.tty != nil {
		if p.out.ended() {
			return errExited
		}
		_, err := p.tty.Write(b)
		if errors.Is(err, os.ErrClosed) {
			return errExited
		}
		return err
	}
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin == nil {
		return errNoStdin
	}
	_, err := p.stdin.Write(b)
	return err
}

var errNoStdin = errors.New("stdin is closed or was not enabled for this process")

// closeStdin closes the stdin pipe, delivering EOF to the process.
func (p *proc) closeStdin() {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin != nil {
		p.stdin.Close()
		p.stdin = nil
	}
}

// signal delivers sig to the process's whole process group, so a shell's
// children go with it.
func (p *proc) signal(sig syscall.Signal) error {
	if p.out.ended() {
		return errExited
	}
	err := syscall.Kill(-int(p.pid), sig)
	if errors.Is(err, syscall.ESRCH) {
		err = syscall.Kill(int(p.pid), sig)
	}
	return err
}

// resize changes the PTY's window size.
func (p *proc) resize(size *rpc.PTY_Size) error {
	if p.tty == nil {
		return errNoPTY
	}
	if p.out.ended() {
		return errExited
	}
	return pty.Setsize(p.tty, &pty.Winsize{Cols: uint16(size.GetCols()), Rows: uint16(size.GetRows())})
}

var errNoPTY = errors.New("process has no pty")

func (p *proc) info() *rpc.ProcessInfo {
	info := &rpc.ProcessInfo{Config: p.config, Pid: p.pid}
	if p.tag != "" {
		info.Tag = &p.tag
	}
	return info
}
