package interpreter

import (
	"context"
	"encoding/json"
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
// on shell and its iopub delivers.
func startJupyter(ctx context.Context, argv []string, cwd string, env []string) (kernel, error) {
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
	p, err := startProcess(args, cwd, env, nil, nil)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	k := &jupyterKernel{process: p, sign: signer(conn.Key), session: newID(), dir: dir, cancel: cancel, to: map[string]chan message{}}
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
// what was published before it was connected.
func (k *jupyterKernel) waitReady(ctx context.Context) error {
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
func (k *jupyterKernel) answered(ctx context.Context, ch <-chan message) (bool, error) {
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
		case <-k.done:
			return false, k.endedEarly()
		case <-ctx.Done():
			return false, fmt.Errorf("kernel did not answer within %s", kernelStartTimeout)
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
