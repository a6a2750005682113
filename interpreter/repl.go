package interpreter

import (
	"bufio"
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
)

// replKernel is a kernel that is a driver of the server's own
// (kernels/): a program that keeps one language's state from run to run,
// spoken to over pipes.
//
// The driver reads requests from its fd 3, a line each: the file holding
// the code to run, a space, and the run's sync mark. What the code
// prints goes to the driver's stdout and stderr, which the server
// streams as the run's output. When the code is done the driver writes
// the mark to stdout and to stderr, then to its fd 4 what the run gave,
// a JSON object a line: {"type":"result","data":{MIME type: value}},
// {"type":"error","name","value","traceback"}, and last
// {"type":"done"} with the code's exit "status" where it has one. A run
// ends when done and both marks have come: after the last of its output.
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
	go k.stream("stdout", pipes[0][0])
	go k.stream("stderr", pipes[1][0])
	go k.results(pipes[3][0])
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
	if _, err := fmt.Fprintf(k.requests, "%s %s\n", file, k.mark); err != nil {
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

// stream passes what the driver prints on one of stdout or stderr (name)
// to the run under way as text lines, up to the run's mark.
func (k *replKernel) stream(name string, f *os.File) {
	defer f.Close()
	s := markSplitter{mark: k.mark}
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		chunk := buf[:n]
		for {
			text, marked := s.feed(chunk)
			chunk = nil
			r := k.run()
			if len(text) > 0 {
				_, _ = k.out.Write(text)
				if r != nil {
					r.send(event{"type": name, "text": string(text)})
				}
			}
			if !marked {
				break
			}
			if r != nil {
				k.step(r)
			}
		}
		if err != nil {
			return
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

// results passes the driver's result lines to the run under way.
func (k *replKernel) results(f *os.File) {
	defer f.Close()
	rd := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := rd.ReadBytes('\n')
		if err != nil {
			if err != io.EOF || len(line) == 0 {
				return
			}
		}
		var l resultLine
		r := k.run()
		if json.Unmarshal(line, &l) != nil || r == nil {
			continue
		}
		switch l.Type {
		case "result":
			e := resultOf(l.Data)
			e["is_main_result"] = true
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
