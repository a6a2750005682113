package interpreter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// replKernel is a kernel that is a driver of the server's own
// (kernels/): a program that keeps one language's state from run to run,
// spoken to over pipes.
//
// The driver reads requests from its fd 3, a line each: the file holding
// the code to run, a space, the run's sync mark, and " silent" for a run
// of the server's own (one a driver does not count as an execution). What
// the code prints goes to the driver's stdout and stderr, which the
// server streams as the run's output. What the run gives goes to the
// driver's fd 4, a JSON object a line: {"type":"result","data":{MIME
// type: value}} (the main result), {"type":"display","data":…} (one
// displayed), {"type":"error","name","value","traceback"}. When the code
// is done the driver writes the mark to stdout and to stderr, then
// {"type":"done"} to fd 4, with the code's exit "status" where it has
// one. A run ends when done and both marks have come: after the last of
// its output.
type replKernel struct {
	*process
	dir      string   // the file the code of a run is put in
	requests *os.File // the driver's fd 3
	mark     []byte
	runs     int // runs counted (not silent) so far

	mu  sync.Mutex
	cur *replRun // the run under way
}

// replRun is one run of a replKernel.
type replRun struct {
	out      chan event
	released chan struct{}

	mu      sync.Mutex
	pending int  // of stdout's mark, stderr's mark and done
	failed  bool // an error line was sent
}

// startREPL starts the driver argv in cwd with env, and returns once it
// has done a first, empty run.
func startREPL(ctx context.Context, argv []string, cwd string, env []string) (kernel, error) {
	dir, err := os.MkdirTemp("", "roost-kernel-")
	if err != nil {
		return nil, err
	}
	var pipes [4][2]*os.File // stdout, stderr, requests, results: read, write ends
	for i := range pipes {
		if pipes[i][0], pipes[i][1], err = os.Pipe(); err != nil {
			closeAll(pipes[:i])
			os.RemoveAll(dir)
			return nil, err
		}
	}
	p, err := startProcess(argv, cwd, env, pipes[0][1], pipes[1][1], pipes[2][0], pipes[3][1])
	for _, f := range []*os.File{pipes[0][1], pipes[1][1], pipes[2][0], pipes[3][1]} {
		f.Close() // the driver's ends
	}
	if err != nil {
		closeAll(pipes[:])
		os.RemoveAll(dir)
		return nil, err
	}
	k := &replKernel{process: p, dir: dir, requests: pipes[2][1], mark: []byte("roost-sync-" + newID())}
	go k.pump(pipes[0][0], pipes[1][0], pipes[3][0])
	if err := k.waitReady(ctx); err != nil {
		k.close()
		return nil, err
	}
	return k, nil
}

func closeAll(pipes [][2]*os.File) {
	for _, p := range pipes {
		p[0].Close()
		p[1].Close()
	}
}

// waitReady runs nothing, silently, and waits for the driver to be done.
func (k *replKernel) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, kernelStartTimeout)
	defer cancel()
	out, release, err := k.execute("", true)
	if err != nil {
		return err
	}
	defer release()
	for {
		select {
		case _, ok := <-out:
			if !ok {
				return nil
			}
		case <-k.done:
			return k.endedEarly()
		case <-ctx.Done():
			return fmt.Errorf("kernel did not answer within %s: %s", kernelStartTimeout, k.out)
		}
	}
}

func (k *replKernel) execute(code string, silent bool) (<-chan event, func(), error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cur != nil {
		return nil, nil, errors.New("the kernel is still running the previous code")
	}
	file := filepath.Join(k.dir, "code")
	if err := os.WriteFile(file, []byte(code), 0o600); err != nil {
		return nil, nil, err
	}
	r := &replRun{out: make(chan event, 1), released: make(chan struct{}), pending: 3}
	if !silent {
		k.runs++
		r.out <- event{"type": "number_of_executions", "execution_count": k.runs}
	}
	request := file + " " + string(k.mark)
	if silent {
		request += " silent"
	}
	if _, err := io.WriteString(k.requests, request+"\n"); err != nil {
		return nil, nil, errKernelDied
	}
	k.cur = r
	var once sync.Once
	release := func() {
		once.Do(func() {
			close(r.released)
			k.mu.Lock()
			if k.cur == r {
				k.cur = nil
			}
			k.mu.Unlock()
		})
	}
	return r.out, release, nil
}

// run is the run under way, or nil.
func (k *replKernel) run() *replRun {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur
}

// send gives e to r's reader, unless r is over or released.
func (r *replRun) send(e event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == 0 {
		return
	}
	if e["type"] == "error" {
		r.failed = true
	}
	select {
	case r.out <- e:
	case <-r.released:
	}
}

// step counts one of the three things that end r; the last closes its
// output, and the kernel is free for the next run.
func (k *replKernel) step(r *replRun) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == 0 {
		return
	}
	if r.pending--; r.pending == 0 {
		close(r.out)
		k.mu.Lock()
		if k.cur == r {
			k.cur = nil
		}
		k.mu.Unlock()
	}
}

// pump reads what the driver prints on stdout and stderr and the lines
// it writes to fd 4, until all three close, what it printed ahead of what
// it gave: the driver writes its output before each line of fd 4, so
// output that came before a result is read, and sent, before it.
func (k *replKernel) pump(stdout, stderr, results *os.File) {
	files := []*os.File{stdout, stderr, results}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	streams := []*replStream{{name: "stdout", s: markSplitter{mark: k.mark}}, {name: "stderr", s: markSplitter{mark: k.mark}}}
	fds := make([]unix.PollFd, len(files))
	for i, f := range files {
		fds[i] = unix.PollFd{Fd: int32(f.Fd()), Events: unix.POLLIN} // Fd: reads block, after poll
	}
	buf := make([]byte, 64<<10)
	var lines []byte // of fd 4, read and not yet whole
	for fds[0].Fd >= 0 || fds[1].Fd >= 0 || fds[2].Fd >= 0 {
		// Output first: after each line of fd 4 the streams are looked at
		// again (at once), before the next line.
		timeout := -1
		if bytes.IndexByte(lines, '\n') >= 0 {
			timeout = 0
		}
		if _, err := unix.Poll(fds, timeout); err == unix.EINTR {
			continue
		} else if err != nil {
			return
		}
		printed := false
		for i, st := range streams {
			if fds[i].Revents != 0 {
				printed = true
				if !readSome(files[i], buf, func(b []byte) { k.printed(st, b) }) {
					fds[i].Fd = -1
				}
			}
		}
		if printed {
			continue
		}
		if fds[2].Revents != 0 && !readSome(files[2], buf, func(b []byte) { lines = append(lines, b...) }) {
			fds[2].Fd = -1
			lines = append(lines, '\n') // a last line without its newline
		}
		if i := bytes.IndexByte(lines, '\n'); i >= 0 {
			k.result(lines[:i])
			lines = lines[i+1:]
		}
	}
}

// readSome reads what f has into buf and gives it to got; false at its
// end.
func readSome(f *os.File, buf []byte, got func([]byte)) bool {
	n, err := f.Read(buf)
	if n > 0 {
		got(buf[:n])
	}
	return err == nil || n > 0
}

// replStream is one of the driver's stdout and stderr.
type replStream struct {
	name string
	s    markSplitter
}

// printed passes what the driver printed on st to the run under way as
// text lines, up to the run's mark.
func (k *replKernel) printed(st *replStream, chunk []byte) {
	for {
		text, marked := st.s.feed(chunk)
		chunk = nil
		r := k.run()
		if len(text) > 0 {
			_, _ = k.out.Write(text)
			if r != nil {
				r.send(event{"type": st.name, "text": string(text)})
			}
		}
		if !marked {
			return
		}
		if r != nil {
			k.step(r)
		}
	}
}

// resultLine is a line the driver writes to fd 4.
type resultLine struct {
	Type      string         `json:"type"`
	Data      map[string]any `json:"data"`
	Name      string         `json:"name"`
	Value     string         `json:"value"`
	Traceback string         `json:"traceback"`
	Status    int            `json:"status"`
}

// result passes a line of the driver's fd 4 to the run under way.
func (k *replKernel) result(line []byte) {
	var l resultLine
	r := k.run()
	if json.Unmarshal(line, &l) != nil || r == nil {
		return
	}
	switch l.Type {
	case "result", "display":
		e := resultOf(l.Data)
		e["is_main_result"] = l.Type == "result"
		r.send(e)
	case "error":
		r.send(event{"type": "error", "name": l.Name, "value": l.Value, "traceback": l.Traceback})
	case "done":
		if l.Status != 0 && !r.failed {
			r.send(event{"type": "error", "name": "ExitStatus", "value": "exit status " + strconv.Itoa(l.Status), "traceback": ""})
		}
		k.step(r)
	}
}

func (k *replKernel) close() {
	k.kill()
	k.requests.Close()
	os.RemoveAll(k.dir)
}

// markSplitter cuts a stream's text at a run's mark, holding back what
// may be the start of the mark or of a UTF-8 character, so that neither
// is split between two lines.
type markSplitter struct {
	mark []byte
	buf  []byte
}

// feed adds p to what is held, and returns the text that can go on; when
// marked, that text is all that came before the mark, and feed(nil) gives
// what came after it.
func (s *markSplitter) feed(p []byte) (text []byte, marked bool) {
	s.buf = append(s.buf, p...)
	if i := bytes.Index(s.buf, s.mark); i >= 0 {
		text = bytes.Clone(s.buf[:i])
		s.buf = append(s.buf[:0], s.buf[i+len(s.mark):]...)
		return text, true
	}
	keep := max(markPrefix(s.buf, s.mark), partialRune(s.buf))
	text = bytes.Clone(s.buf[:len(s.buf)-keep])
	s.buf = append(s.buf[:0], s.buf[len(s.buf)-keep:]...)
	return text, false
}

// markPrefix is the length of the longest end of b that begins mark.
func markPrefix(b, mark []byte) int {
	for n := min(len(mark)-1, len(b)); n > 0; n-- {
		if bytes.HasSuffix(b, mark[:n]) {
			return n
		}
	}
	return 0
}

// partialRune is the length of an unfinished UTF-8 character at b's end.
func partialRune(b []byte) int {
	for n := 1; n <= min(utf8.UTFMax-1, len(b)); n++ {
		c := b[len(b)-n]
		if utf8.RuneStart(c) {
			if c >= utf8.RuneSelf && !utf8.FullRune(b[len(b)-n:]) {
				return n
			}
			return 0
		}
	}
	return 0
}
