package build

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"strings"
	"time"

	"roost.dev/roost/template/content"
)

// defaultPath is the PATH of steps whose config sets none, Docker's.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// tailLines is how many of a failed RUN's last lines its error keeps.
const tailLines = 20

// exec does step for real, in the working tree, and returns its record.
func (s *stage) exec(ctx context.Context, name string, step Step) (record, error) {
	rec := record{Config: s.config}
	rec.Config.Env = maps.Clone(s.config.Env)
	switch step.Type {
	case StepEnv:
		if rec.Config.Env == nil {
			rec.Config.Env = map[string]string{}
		}
		for i := 0; i < len(step.Args); i += 2 {
			rec.Config.Env[step.Args[i]] = step.Args[i+1]
		}
		return rec, nil
	}
	tree, err := s.workTree(ctx)
	if err != nil {
		return record{}, err
	}
	var write func(io.Writer) error
	switch step.Type {
	case StepRun:
		return s.run(ctx, name, step, tree, rec)
	case StepUser:
		if _, err := lookupOwner(tree, step.Args[0]); err != nil {
			return record{}, err
		}
		rec.Config.User = step.Args[0]
		return rec, nil
	case StepWorkdir:
		dir := s.resolve(step.Args[0])
		owner, err := lookupOwner(tree, s.user())
		if err != nil {
			return record{}, err
		}
		rec.Config.Workdir = dir
		if missing := missingDirs(tree, dir); len(missing) > 0 {
			write = func(w io.Writer) error { return dirsLayer(w, missing, owner) }
		}
	case StepCopy, StepAdd:
		write = func(w io.Writer) error { return s.copy(ctx, step, tree, w) }
	}
	if write != nil {
		d, err := s.r.putLayer(ctx, write)
		if err != nil {
			return record{}, err
		}
		rec.Layer = &d
	}
	return rec, nil
}

// putLayer puts the layer write writes into Blobs, spooled through a
// file of the build's work dir.
func (r *run) putLayer(ctx context.Context, write func(io.Writer) error) (content.Descriptor, error) {
	f, err := os.CreateTemp(r.work, "layer-")
	if err != nil {
		return content.Descriptor{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := write(bw); err != nil {
		return content.Descriptor{}, err
	}
	if err := bw.Flush(); err != nil {
		return content.Descriptor{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return content.Descriptor{}, err
	}
	return r.b.Blobs.Put(ctx, f, "")
}

// user is the current user, root when the config names none.
func (s *stage) user() string {
	if s.config.User == "" {
		return "root"
	}
	return s.config.User
}

// workdir is the current workdir, / when the config names none.
func (s *stage) workdir() string {
	if s.config.Workdir == "" {
		return "/"
	}
	return s.config.Workdir
}

// resolve is p relative to the current workdir.
func (s *stage) resolve(p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	return path.Join(s.workdir(), p)
}

func (s *stage) run(ctx context.Context, name string, step Step, tree string, rec record) (record, error) {
	req := RunRequest{User: s.user(), Workdir: s.workdir(), Env: s.runEnv(step), Internet: !step.NoInternet, Argv: step.Exec}
	if len(step.Args) == 2 {
		req.User = step.Args[1]
	}
	if len(req.Argv) == 0 {
		req.Argv = []string{shellOf(tree), "-c", step.Args[0]}
	}
	out := &logWriter{step: name, log: s.r.log}
	res, err := s.r.b.Env.Run(ctx, tree, req, out)
	out.flush()
	if err != nil {
		return record{}, fmt.Errorf("run: %w", err)
	}
	defer res.Done()
	if res.ExitCode != 0 {
		return record{}, &StepError{Command: step.String(), ExitCode: res.ExitCode, Message: out.tail()}
	}
	d, err := s.r.putLayer(ctx, func(w io.Writer) error { return LayerOfUpper(ctx, res.Upper, res.UIDShift, w) })
	if err != nil {
		return record{}, fmt.Errorf("layer of the step: %w", err)
	}
	rec.Layer = &d
	return rec, nil
}

// runEnv is a RUN's environment: the config's, the step's own, and a
// PATH.
func (s *stage) runEnv(step Step) map[string]string {
	env := map[string]string{"PATH": defaultPath}
	maps.Copy(env, step.Env)
	maps.Copy(env, s.config.Env)
	return env
}

// shellOf is the shell an E2B RUN runs in: bash when the tree has it.
func shellOf(tree string) string {
	for _, p := range []string{"bin/bash", "usr/bin/bash"} {
		if st, err := os.Stat(tree + "/" + p); err == nil && st.Mode().IsRegular() {
			return "/" + p
		}
	}
	return "/bin/sh"
}

// logWriter turns a RUN's output into log entries, a line each, and keeps
// the last lines for its error.
type logWriter struct {
	step    string
	log     func(LogEntry)
	partial []byte
	last    []string
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.line(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) > 64<<10 { // a line without end: cut it
		w.flush()
	}
	return len(b), nil
}

func (w *logWriter) flush() {
	if len(w.partial) > 0 {
		w.line(string(w.partial))
		w.partial = nil
	}
}

func (w *logWriter) line(l string) {
	l = strings.TrimRight(l, "\r")
	w.log(LogEntry{Time: time.Now(), Level: LevelInfo, Step: w.step, Message: l})
	if w.last = append(w.last, l); len(w.last) > tailLines {
		w.last = w.last[1:]
	}
}

func (w *logWriter) tail() string { return strings.Join(w.last, "\n") }
