package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// qmp is a client of QEMU's machine protocol on a Unix socket. Commands
// are serialised (QMP answers in order, and we wait for each answer);
// asynchronous events are read and dropped: the driver polls state
// instead (query-status, query-migrate).
type qmp struct {
	conn net.Conn
	rd   *bufio.Reader

	mu     sync.Mutex // guards the conn for writing, and the answer in flight
	answer chan qmpMessage

	done chan struct{} // closed when the reader ends
	err  error         // why the reader ended; read after done
}

type qmpMessage struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string          `json:"event"`
	QMP   json.RawMessage `json:"QMP"`
}

// dialQMP connects to a QMP socket, retrying until QEMU has created it or
// ctx ends, and negotiates capabilities.
func dialQMP(ctx context.Context, path string) (*qmp, error) {
	if _, ok := ctx.Deadline(); !ok {
		// A QEMU that accepts but never greets must not hang the caller.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	var conn net.Conn
	var err error
	for {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "unix", path)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to qmp %s: %w", path, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	q := &qmp{conn: conn, rd: bufio.NewReader(conn), answer: make(chan qmpMessage, 1),
		done: make(chan struct{})}
	// The greeting comes first, before any command.
	dl, _ := ctx.Deadline()
	conn.SetReadDeadline(dl)
	var greeting qmpMessage
	line, err := q.rd.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &greeting)
	}
	if err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp greeting: %v", err)
	}
	conn.SetReadDeadline(time.Time{})
	go q.read()
	if _, err := q.execute(ctx, "qmp_capabilities", nil); err != nil {
		q.close()
		return nil, err
	}
	return q, nil
}

func (q *qmp) read() {
	defer close(q.done)
	for {
		line, err := q.rd.ReadBytes('\n')
		if err != nil {
			q.err = err
			return
		}
		var m qmpMessage
		if err := json.Unmarshal(line, &m); err != nil {
			continue
		}
		if m.Event != "" {
			continue
		}
		select {
		case q.answer <- m:
		default:
		}
	}
}

// execute runs a command and returns its "return" value.
func (q *qmp) execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	return q.executeFile(ctx, cmd, args, nil)
}

// executeFile is execute that passes f's descriptor along (SCM_RIGHTS),
// as getfd wants.
func (q *qmp) executeFile(ctx context.Context, cmd string, args any, f *os.File) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	b = append(b, '\n')
	if dl, ok := ctx.Deadline(); ok {
		q.conn.SetWriteDeadline(dl)
	}
	var err error
	if f != nil {
		uc, ok := q.conn.(*net.UnixConn)
		if !ok {
			return nil, fmt.Errorf("qmp %s: descriptors need a unix socket", cmd)
		}
		_, _, err = uc.WriteMsgUnix(b, unix.UnixRights(int(f.Fd())), nil)
	} else {
		_, err = q.conn.Write(b)
	}
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	select {
	case m := <-q.answer:
		if m.Error != nil {
			return nil, fmt.Errorf("qmp %s: %s: %s", cmd, m.Error.Class, m.Error.Desc)
		}
		return m.Return, nil
	case <-q.done:
		return nil, fmt.Errorf("qmp %s: connection closed: %v", cmd, q.err)
	case <-ctx.Done():
		// The answer may still come; a later command must not take it for
		// its own, so the connection is unusable from here.
		q.conn.Close()
		return nil, fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
}

// status returns the VM's run state ("running", "paused", "inmigrate", ...).
func (q *qmp) status(ctx context.Context) (string, error) {
	raw, err := q.execute(ctx, "query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return "", fmt.Errorf("qmp query-status: %w", err)
	}
	return st.Status, nil
}

// waitMigration polls query-migrate until the migration completes or fails.
func (q *qmp) waitMigration(ctx context.Context) error {
	for {
		raw, err := q.execute(ctx, "query-migrate", nil)
		if err != nil {
			return err
		}
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("qmp query-migrate: %w", err)
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migration: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (q *qmp) close() error {
	err := q.conn.Close()
	<-q.done
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// sendFile hands QEMU a descriptor under name (getfd), for an fd: URI.
func (q *qmp) sendFile(ctx context.Context, name string, f *os.File) error {
	_, err := q.executeFile(ctx, "getfd", map[string]any{"fdname": name}, f)
	return err
}
