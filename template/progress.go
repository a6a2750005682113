package template

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
)

// The stages of building base, as the progress display numbers them.
const (
	stageRelease = iota + 1
	stageResolve
	stageRetrieve
	stageExtract
	stageInstall
	stageConfigure
	stageCleanup
)

var stageNames = [...]string{
	stageRelease:   "fetching the release index",
	stageResolve:   "resolving dependencies",
	stageRetrieve:  "retrieving packages",
	stageExtract:   "extracting packages",
	stageInstall:   "installing packages",
	stageConfigure: "adding the user and configuring",
	stageCleanup:   "cleaning up",
}

var stageCount = len(stageNames) - 1

// progress writes a build's progress lines to every attached writer: the
// caller that started the build and those waiting for it.
type progress struct {
	name string

	mu     sync.Mutex // guards the fields below and writes to ws
	ws     map[int]io.Writer
	nextID int
	stage  int
}

func newProgress(name string) *progress {
	return &progress{name: name, ws: map[int]io.Writer{}}
}

// attach adds w (nil is ignored), writing first to it alone if it is not
// empty, and returns the function that removes it; after that returns, w
// is not written to again.
func (p *progress) attach(w io.Writer, first string) (detach func()) {
	if w == nil {
		return func() {}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if first != "" {
		_, _ = io.WriteString(w, first+"\n")
	}
	id := p.nextID
	p.nextID++
	p.ws[id] = w
	return func() {
		p.mu.Lock()
		delete(p.ws, id)
		p.mu.Unlock()
	}
}

// printf writes one line to every writer. Write errors are ignored: a
// viewer that went away does not stop the build.
func (p *progress) printf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if !strings.HasSuffix(line, "\n") {
		line += "\n"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.ws {
		_, _ = io.WriteString(w, line)
	}
}

// enter announces stage n unless the build is already there or past it.
func (p *progress) enter(n int) {
	p.mu.Lock()
	if n <= p.stage {
		p.mu.Unlock()
		return
	}
	p.stage = n
	p.mu.Unlock()
	p.printf("[%s %d/%d] %s", p.name, n, stageCount, stageNames[n])
}

// debootstrapLine follows one line of debootstrap's output: its "I:"
// lines move the stage on; warnings and errors are passed through.
func (p *progress) debootstrapLine(line string) {
	if strings.HasPrefix(line, "W: ") || strings.HasPrefix(line, "E: ") {
		p.printf("[%s] debootstrap: %s", p.name, line)
		return
	}
	if n := debootstrapStage(line); n > 0 {
		p.enter(n)
	}
}

// debootstrapStage maps a debootstrap "I:" line to the stage it starts
// or belongs to (0 when it says nothing about the stage).
func debootstrapStage(line string) int {
	msg, ok := strings.CutPrefix(line, "I: ")
	if !ok {
		return 0
	}
	has := func(prefixes ...string) bool {
		for _, pre := range prefixes {
			if strings.HasPrefix(msg, pre) {
				return true
			}
		}
		return false
	}
	switch {
	case has("Target architecture", "Retrieving InRelease", "Retrieving Release", "Checking Release", "Valid Release"):
		return stageRelease
	case has("Retrieving Packages", "Validating Packages", "Resolving dependencies", "Checking component", "Found additional"):
		return stageResolve
	case has("Retrieving ", "Validating "):
		return stageRetrieve
	case has("Chosen extractor", "Extracting "):
		return stageExtract
	case has("Installing ", "Unpacking ", "Configuring ", "Base system installed"):
		return stageInstall
	}
	return 0
}

// lineWriter splits what is written to it into lines, copying all of it
// to out and handing each complete line to fn. Not safe for concurrent
// use (os/exec serialises writes when Stdout and Stderr are the same
// writer).
type lineWriter struct {
	out  io.Writer
	fn   func(string)
	part []byte
}

func (l *lineWriter) Write(b []byte) (int, error) {
	if _, err := l.out.Write(b); err != nil {
		return 0, err
	}
	l.part = append(l.part, b...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		l.fn(strings.TrimRight(string(l.part[:i]), "\r"))
		l.part = l.part[i+1:]
	}
	if len(l.part) > 64*1024 { // a runaway line: keep only its start
		l.part = l.part[:0]
	}
	return len(b), nil
}
