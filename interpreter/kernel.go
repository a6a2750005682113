package interpreter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// kernel is one running kernel of a context: a Jupyter kernel
// (jupyter.go) or a driver the server speaks to over pipes (repl.go).
type kernel interface {
	// execute starts a run of code. Its output comes on out, which closes
	// when the kernel is ready for the next run; release ends the run's
	// hold on the kernel, whether or not out has closed. A silent run
	// (the server's own set-up code) counts no execution.
	execute(code string, silent bool) (out <-chan event, release func(), err error)
	// interrupt asks the kernel to stop what it runs.
	interrupt()
	// exited is closed when the kernel's process has ended.
	exited() <-chan struct{}
	// close ends the kernel and everything it started.
	close()
}

const (
	// keepaliveEvery is how long a run may print nothing before the server
	// writes a keepalive line (the package waits at most its timeout for
	// the whole answer, but a proxy may close an idle connection).
	keepaliveEvery = 5 * time.Second
	// interruptGrace is how long an interrupted run may take to stop
	// before its kernel is restarted.
	interruptGrace = 10 * time.Second
	// kernelStartTimeout bounds a kernel's start until it answers: below
	// the minute E2B's packages wait for an answer, so that a kernel that
	// does not start is reported as such.
	kernelStartTimeout = 45 * time.Second
)

var (
	// errKernelDied is what a run gets when its kernel's process ends.
	errKernelDied = errors.New("the kernel died")
	// errStuck is a run that did not stop when interrupted.
	errStuck = errors.New("the kernel did not stop when interrupted")
)

// run executes code in k and gives each line of its output to emit, until
// the kernel is ready again. When ctx ends (the client went away or its
// time ran out) the kernel is interrupted, and run waits for it to be
// ready for interruptGrace. A silent run emits nothing. It fails with
// errKernelDied when the kernel's process ends, errStuck when an
// interrupt did not stop it.
func run(ctx context.Context, k kernel, code string, silent bool, emit func(event)) error {
	out, release, err := k.execute(code, silent)
	if err != nil {
		return err
	}
	defer release()
	tick := time.NewTicker(keepaliveEvery)
	defer tick.Stop()
	cancelled := ctx.Done()
	var grace <-chan time.Time
	for {
		select {
		case e, ok := <-out:
			if !ok {
				return nil
			}
			if !silent {
				emit(e)
				tick.Reset(keepaliveEvery)
			}
		case <-tick.C:
			if !silent {
				emit(event{"type": "keepalive"})
			}
		case <-cancelled:
			k.interrupt()
			cancelled, grace = nil, time.After(interruptGrace)
		case <-grace:
			return errStuck
		case <-k.exited():
			return errKernelDied
		}
	}
}

// process is a kernel's process, in a process group of its own so that
// an interrupt or the end reaches what it started too.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has ended
	out  *tail         // the end of what it printed itself, for errors
}

// startProcess starts argv in cwd with env. What it prints goes to
// stdout and stderr when given, else to its tail; files become its
// fds 3 and on.
func startProcess(argv []string, cwd string, env []string, stdout, stderr *os.File, files ...*os.File) (*process, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = cwd, env
	p := &process{cmd: cmd, done: make(chan struct{}), out: &tail{max: 4096}}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if stdout != nil {
		cmd.Stdout, cmd.Stderr = stdout, stderr
	}
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start kernel %s: %w", argv[0], err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *process) exited() <-chan struct{} { return p.done }

// interrupt sends SIGINT to the process's group, as Jupyter interrupts
// kernels whose interrupt mode is signal.
func (p *process) interrupt() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
}

// kill ends the process's group and waits a moment for the process.
func (p *process) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// endedEarly is the error of a kernel whose process ended as it started.
func (p *process) endedEarly() error {
	return fmt.Errorf("kernel ended as it started (%s): %s", p.cmd.ProcessState, p.out)
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
