package interpreter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-zeromq/zmq4"
)

// kernel is one running Jupyter kernel and the server's sockets to it:
// shell (requests), control (shutdown), iopub (what it prints and shows).
type kernel struct {
	sign    signer
	session string
	cmd     *exec.Cmd
	dir     string // holds the connection file
	cancel  context.CancelFunc
	shell   zmq4.Socket
	iopub   zmq4.Socket
	// exited is closed when the kernel's process has ended.
	exited chan struct{}
	out    *tail // the end of its output

	mu sync.Mutex
	// to routes messages by their parent's ID to the request that sent
	// it: iopub's output and shell's replies alike.
	to map[string]chan message
}

// connection is a kernel's connection file.
type connection struct {
	IP              string `json:"ip"`
	Transport       string `json:"transport"`
	ShellPort       int    `json:"shell_port"`
	IOPubPort       int    `json:"iopub_port"`
	StdinPort       int    `json:"stdin_port"`
	ControlPort     int    `json:"control_port"`
	HBPort          int    `json:"hb_port"`
	Key             string `json:"key"`
	SignatureScheme string `json:"signature_scheme"`
}

// kernelStartTimeout bounds a kernel's start until it answers.
const kernelStartTimeout = 60 * time.Second

// startKernel starts the kernel argv (its "{connection_file}" replaced)
// in dir cwd with env, and returns once it answers kernel_info on shell
// and its iopub delivers.
func startKernel(ctx context.Context, argv []string, cwd string, env []string) (*kernel, error) {
	dir, err := os.MkdirTemp("", "roost-kernel-")
	if err != nil {
		return nil, err
	}
	conn := connection{IP: "127.0.0.1", Transport: "tcp", Key: newID(), SignatureScheme: "hmac-sha256"}
	for _, p := range []*int{&conn.ShellPort, &conn.IOPubPort, &conn.StdinPort, &conn.ControlPort, &conn.HBPort} {
		if *p, err = freePort(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	file := filepath.Join(dir, "connection.json")
	b, _ := json.Marshal(conn)
	if err := os.WriteFile(file, b, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	args := make([]string, len(argv))
	for i, a := range argv {
		args[i] = strings.ReplaceAll(a, "{connection_file}", file)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir, cmd.Env = cwd, env
	// What a kernel prints itself is banners, but for why it did not
	// start: the end of it goes in that error.
	out := &tail{max: 4096}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start kernel %s: %w", args[0], err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	k := &kernel{sign: signer(conn.Key), session: newID(), cmd: cmd, dir: dir, cancel: cancel, exited: make(chan struct{}), to: map[string]chan message{}, out: out}
	go func() { _ = cmd.Wait(); close(k.exited) }()
	if err := k.connect(sctx, conn); err != nil {
		k.close()
		return nil, err
	}
	if err := k.waitReady(ctx); err != nil {
		k.close()
		return nil, err
	}
	return k, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// connect dials the kernel's shell and iopub sockets (retrying while it
// starts) and starts reading them.
func (k *kernel) connect(ctx context.Context, c connection) error {
	addr := func(port int) string { return fmt.Sprintf("tcp://%s:%d", c.IP, port) }
	retry := []zmq4.Option{zmq4.WithDialerRetry(50 * time.Millisecond), zmq4.WithDialerMaxRetries(int(kernelStartTimeout / (50 * time.Millisecond)))}
	k.shell = zmq4.NewDealer(ctx, append(retry, zmq4.WithID(zmq4.SocketIdentity(k.session)))...)
	k.iopub = zmq4.NewSub(ctx, retry...)
	if err := k.shell.Dial(addr(c.ShellPort)); err != nil {
		return fmt.Errorf("kernel shell: %w", err)
	}
	if err := k.iopub.Dial(addr(c.IOPubPort)); err != nil {
		return fmt.Errorf("kernel iopub: %w", err)
	}
	if err := k.iopub.SetOption(zmq4.OptionSubscribe, ""); err != nil {
		return fmt.Errorf("kernel iopub: %w", err)
	}
	go k.read(k.shell)
	go k.read(k.iopub)
	return nil
}

// read routes the messages of sock to the requests they answer, until
// the socket closes.
func (k *kernel) read(sock zmq4.Socket) {
	for {
		raw, err := sock.Recv()
		if err != nil {
			return
		}
		m, err := k.sign.decode(raw.Frames)
		if err != nil {
			continue // not the kernel's: dropped
		}
		k.mu.Lock()
		ch := k.to[m.Parent.MsgID]
		k.mu.Unlock()
		if ch == nil {
			continue
		}
		select {
		case ch <- m:
		case <-k.exited:
			return
		}
	}
}

// send sends a request of msgType on shell, its answers (iopub's and
// shell's) routed to the channel returned until done is called.
func (k *kernel) send(msgType string, content any) (<-chan message, func(), error) {
	frames, id, err := k.sign.encode(k.session, msgType, content)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan message, 64)
	k.mu.Lock()
	k.to[id] = ch
	k.mu.Unlock()
	done := func() {
		k.mu.Lock()
		delete(k.to, id)
		k.mu.Unlock()
	}
	if err := k.shell.Send(zmq4.NewMsgFrom(frames...)); err != nil {
		done()
		return nil, nil, fmt.Errorf("send %s: %w", msgType, err)
	}
	return ch, done, nil
}

// waitReady asks for kernel_info until the kernel answers on shell and
// its iopub delivers the status of that request: a SUB socket misses
// what was published before it was connected.
func (k *kernel) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, kernelStartTimeout)
	defer cancel()
	for {
		ch, done, err := k.send("kernel_info_request", struct{}{})
		if err != nil {
			return err
		}
		ok, err := k.answered(ctx, ch)
		done()
		if ok || err != nil {
			return err
		}
	}
}

// answered waits for a kernel_info request's reply and its iopub status;
// false when the reply came but iopub said nothing within a moment.
func (k *kernel) answered(ctx context.Context, ch <-chan message) (bool, error) {
	replied := false
	var quiet <-chan time.Time
	for {
		select {
		case m := <-ch:
			switch m.Header.MsgType {
			case "kernel_info_reply":
				replied = true
				quiet = time.After(200 * time.Millisecond)
			case "status":
				if replied {
					return true, nil
				}
			}
		case <-quiet:
			return false, nil
		case <-k.exited:
			return false, fmt.Errorf("kernel ended as it started (%s): %s", k.cmd.ProcessState, k.out)
		case <-ctx.Done():
			return false, fmt.Errorf("kernel did not answer within %s", kernelStartTimeout)
		}
	}
}

// interrupt interrupts what the kernel runs: SIGINT to its process
// group, as Jupyter interrupts kernels whose interrupt mode is signal.
func (k *kernel) interrupt() {
	_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGINT)
}

// close ends the kernel and everything it started, and its sockets.
func (k *kernel) close() {
	_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-k.exited:
	case <-time.After(5 * time.Second):
	}
	k.cancel()
	if k.shell != nil {
		k.shell.Close()
	}
	if k.iopub != nil {
		k.iopub.Close()
	}
	os.RemoveAll(k.dir)
}

// errKernelDied is what a run gets when its kernel's process ends.
var errKernelDied = errors.New("the kernel died")

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
