package interpreter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"
)

// jupyterKernel is one running Jupyter kernel and the server's sockets
// to it: shell (requests) and iopub (what it prints and shows).
type jupyterKernel struct {
	*process
	sign    signer
	session string
	dir     string // holds the connection file
	cancel  context.CancelFunc
	shell   zmq4.Socket
	iopub   zmq4.Socket

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

// startJupyter starts the Jupyter kernel argv (its "{connection_file}"
// replaced) in dir cwd with env, and returns once it answers kernel_info
// on shell and its iopub delivers. A kernel that could not bind its ports
// (another process took one between their choice and its bind) is
// started again on new ones.
func startJupyter(ctx context.Context, argv []string, cwd string, env []string) (kernel, error) {
	ctx, cancel := context.WithTimeout(ctx, kernelStartTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		k, err := startJupyterOnce(ctx, argv, cwd, env)
		if !errors.Is(err, errPortTaken) || attempt == portAttempts {
			return k, err
		}
	}
}

// portAttempts is how many times a kernel is started on new ports when
// one it was given is taken.
const portAttempts = 3

// errPortTaken is a kernel's start that ended as it could not bind a port.
var errPortTaken = errors.New("a port of the kernel was taken")

// startJupyterOnce is one start of a kernel, on ports free as it began.
// Its sockets close when the kernel's process ends, or when ctx does
// before it is ready: a kernel that died as it started is reported as
// such, never dialled until the deadline.
func startJupyterOnce(ctx context.Context, argv []string, cwd string, env []string) (kernel, error) {
	dir, err := os.MkdirTemp("", "roost-kernel-")
	if err != nil {
		return nil, err
	}
	conn := connection{IP: "127.0.0.1", Transport: "tcp", Key: newID(), SignatureScheme: "hmac-sha256"}
	if err := freePorts(&conn.ShellPort, &conn.IOPubPort, &conn.StdinPort, &conn.ControlPort, &conn.HBPort); err != nil {
		os.RemoveAll(dir)
		return nil, err
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
	p, err := startProcess(args, cwd, env, nil, nil)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	k := &jupyterKernel{process: p, sign: signer(conn.Key), session: newID(), dir: dir, cancel: cancel, to: map[string]chan message{}}
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-sctx.Done():
		}
	}()
	// Until the kernel is ready, ctx's end closes the sockets too: a dial
	// still retrying stops.
	starting := context.AfterFunc(ctx, cancel)
	if err := k.start(ctx, sctx, conn); err != nil {
		k.close()
		return nil, err
	}
	starting()
	return k, nil
}

// start connects to the kernel and waits for it to answer, within ctx;
// sctx is its sockets' context, which ends with the kernel's process.
func (k *jupyterKernel) start(ctx, sctx context.Context, conn connection) error {
	err := k.connect(sctx, conn)
	if err != nil && sctx.Err() == nil {
		// Not dialled until a deadline or the kernel's end: something
		// else answered on one of its ports.
		err = fmt.Errorf("%w: %w", errPortTaken, err)
	}
	if err == nil {
		err = k.waitReady(ctx)
	}
	if err == nil {
		return nil
	}
	select {
	case <-k.done:
		if strings.Contains(k.out.String(), "Address already in use") {
			return fmt.Errorf("%w: %w", errPortTaken, k.endedEarly())
		}
		return k.endedEarly()
	default:
	}
	if ctx.Err() != nil {
		return fmt.Errorf("kernel did not answer within %s: %s", kernelStartTimeout, k.out)
	}
	return err
}

// freePorts sets each of ports to a port free on the loopback now, no two
// the same.
func freePorts(ports ...*int) error {
	for _, p := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		*p = l.Addr().(*net.TCPAddr).Port
	}
	return nil
}

// connect dials the kernel's shell and iopub sockets (retrying while it
// starts) and starts reading them.
func (k *jupyterKernel) connect(ctx context.Context, c connection) error {
	addr := func(port int) string { return fmt.Sprintf("tcp://%s:%d", c.IP, port) }
	// A sandbox restored from a capture has its connections closed (CRIU's
	// --tcp-close) and the kernel listening still: the sockets dial again.
	retry := []zmq4.Option{zmq4.WithDialerRetry(50 * time.Millisecond), zmq4.WithDialerMaxRetries(int(kernelStartTimeout / (50 * time.Millisecond))),
		zmq4.WithAutomaticReconnect(true)}
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
	go k.read(ctx, k.shell)
	go k.read(ctx, k.iopub)
	return nil
}

// read routes the messages of sock to the requests they answer, until
// the socket closes.
func (k *jupyterKernel) read(ctx context.Context, sock zmq4.Socket) {
	for {
		raw, err := sock.Recv()
		if err != nil {
			// A connection that broke (a sandbox restored from a capture
			// has its connections closed) is dialled again: read on until
			// the socket is closed.
			select {
			case <-ctx.Done():
				return
			case <-k.done:
				return
			case <-time.After(10 * time.Millisecond):
				continue
			}
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
		case <-k.done:
			return
		}
	}
}

// send sends a request of msgType on shell, its answers (iopub's and
// shell's) routed to the channel returned until done is called.
func (k *jupyterKernel) send(msgType string, content any) (<-chan message, func(), error) {
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
// what was published before it was connected. ctx bounds the wait.
func (k *jupyterKernel) waitReady(ctx context.Context) error {
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

// answered waits for a kernel_info request's reply and a status of it on
// iopub (which may come before the reply: they are two sockets); false
// when the reply came but iopub said nothing within a moment.
func (k *jupyterKernel) answered(ctx context.Context, ch <-chan message) (bool, error) {
	replied, published := false, false
	var quiet <-chan time.Time
	for {
		select {
		case m := <-ch:
			switch m.Header.MsgType {
			case "kernel_info_reply":
				replied = true
				quiet = time.After(200 * time.Millisecond)
			case "status":
				published = true
			}
			if replied && published {
				return true, nil
			}
		case <-quiet:
			return false, nil
		case <-k.done:
			return false, errKernelDied
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// close ends the kernel and everything it started, and its sockets.
func (k *jupyterKernel) close() {
	k.kill()
	k.cancel()
	if k.shell != nil {
		k.shell.Close()
	}
	if k.iopub != nil {
		k.iopub.Close()
	}
	os.RemoveAll(k.dir)
}

// execute sends code in an execute_request; its output is the iopub
// messages of that request, mapped to lines, until the kernel says it is
// idle.
func (k *jupyterKernel) execute(code string, silent bool) (<-chan event, func(), error) {
	ch, done, err := k.send("execute_request", map[string]any{
		"code": code, "silent": silent, "store_history": !silent,
		// Runs of a context are serialised: none is queued behind this one
		// for an error to abort (ipykernel aborts the requests that arrive
		// just after an error with stop_on_error, the next run included).
		"user_expressions": map[string]any{}, "allow_stdin": false, "stop_on_error": false,
	})
	if err != nil {
		return nil, nil, err
	}
	out, released := make(chan event), make(chan struct{})
	go func() {
		defer close(out)
		for {
			select {
			case m := <-ch:
				if m.Header.MsgType == "status" && state(m) == "idle" {
					return
				}
				e, ok := eventOf(m)
				if !ok {
					continue
				}
				for _, e := range splitStream(e) {
					select {
					case out <- e:
					case <-released:
						return
					}
				}
			case <-released:
				return
			}
		}
	}()
	var once sync.Once
	return out, func() { once.Do(func() { close(released); done() }) }, nil
}

func state(m message) string {
	var c struct {
		ExecutionState string `json:"execution_state"`
	}
	_ = json.Unmarshal(m.Content, &c)
	return c.ExecutionState
}

// eventOf maps a kernel's iopub message to a line of the answer.
func eventOf(m message) (event, bool) {
	var c struct {
		Name           string          `json:"name"`
		Text           string          `json:"text"`
		ExecutionCount *int            `json:"execution_count"`
		Data           map[string]any  `json:"data"`
		EName          string          `json:"ename"`
		EValue         string          `json:"evalue"`
		Traceback      []string        `json:"traceback"`
		Metadata       json.RawMessage `json:"metadata"`
	}
	if err := json.Unmarshal(m.Content, &c); err != nil {
		return nil, false
	}
	switch m.Header.MsgType {
	case "execute_input":
		if c.ExecutionCount == nil {
			return nil, false
		}
		return event{"type": "number_of_executions", "execution_count": *c.ExecutionCount}, true
	case "stream":
		if c.Name != "stdout" && c.Name != "stderr" {
			return nil, false
		}
		return event{"type": c.Name, "text": c.Text, "timestamp": m.Header.Date}, true
	case "display_data", "execute_result":
		e := resultOf(c.Data)
		e["is_main_result"] = m.Header.MsgType == "execute_result"
		return e, true
	case "error":
		return event{"type": "error", "name": c.EName, "value": c.EValue, "traceback": strings.Join(c.Traceback, "\n")}, true
	}
	return nil, false
}
