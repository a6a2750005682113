package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/template"
)

// MaxForks bounds the forks of one ForkSandbox (E2B's limit).
const MaxForks = 100

// forkParallel is how many forks of one capture start at once.
const forkParallel = 4

// forkSource is what a fork starts from: the capture of the forked
// sandbox, and its template.
type forkSource struct {
	dir  string
	tpl  template.Template
	tree string // the forked sandbox's record's Tree
	// token is the forked sandbox's envd token, which a fork's envd
	// requires until its /init sets the fork's own.
	token string
}

// ForkOutcome is one fork's result: its sandbox, or why it did not start.
type ForkOutcome struct {
	Sandbox Sandbox
	Err     error
}

// Fork makes a new sandbox for each of forks from the running sandbox
// id's current state: the sandbox is captured once (it runs on), and each
// fork starts from the capture with its processes running and its own
// identity. A fork's request gives its ID, timeout, metadata, envd token
// and auto-pause; its template, limits, internet setting and owner are
// the forked sandbox's. Each fork succeeds or fails on its own. Errors of the
// whole: ErrUnsupported when the runtime cannot capture a sandbox's
// memory, ErrNotFound, ErrConflict when the sandbox is not running.
func (m *Manager) Fork(ctx context.Context, id string, forks []CreateRequest) ([]ForkOutcome, error) {
	f, ok := m.rt.(runtime.Forker)
	if !ok {
		return nil, fmt.Errorf("fork sandbox %s: the %s runtime cannot capture a sandbox's memory and processes: %w",
			id, m.rt.Name(), errdefs.ErrUnsupported)
	}
	if len(forks) < 1 || len(forks) > MaxForks {
		return nil, fmt.Errorf("fork sandbox %s: %d forks, want 1 to %d: %w", id, len(forks), MaxForks, errdefs.ErrInvalid)
	}
	sb, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	src, base, err := m.captureForForks(ctx, f, sb)
	if err != nil {
		return nil, fmt.Errorf("fork sandbox %s: %w", id, err)
	}
	defer os.RemoveAll(src.dir)
	out := make([]ForkOutcome, len(forks))
	sem := make(chan struct{}, forkParallel)
	var wg sync.WaitGroup
	for i, req := range forks {
		if base.EnvdToken != "" && req.EnvdToken == "" {
			// Its envd would go on taking the forked sandbox's token.
			out[i].Err = fmt.Errorf("fork of sandbox %s: it requires an envd token, and so does each fork (its own): %w", id, errdefs.ErrInvalid)
			continue
		}
		req.Template, req.TemplateRef, req.Limits, req.DenyInternet = base.Template, nil, base.Limits, base.DenyInternet
		req.EnvVars, req.fork, req.Owner = nil, &src, base.Owner
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			sb, err := m.Create(ctx, req)
			out[i] = ForkOutcome{Sandbox: sb, Err: err}
		})
	}
	wg.Wait()
	return out, nil
}

// captureForForks captures the running sandbox sb for forks, and returns
// the capture with the template and the part of a create request that
// forks share with sb (and sb's envd token, which forks must not).
func (m *Manager) captureForForks(ctx context.Context, f runtime.Forker, sb *sandbox) (forkSource, CreateRequest, error) {
	sb.op.Lock()
	defer sb.op.Unlock()
	rec := sb.snapshot()
	if rec.State != StateRunning {
		return forkSource{}, CreateRequest{}, fmt.Errorf("sandbox is %s, not running: %w", rec.State, errdefs.ErrConflict)
	}
	if err := checkForkable(rec); err != nil {
		return forkSource{}, CreateRequest{}, err
	}
	name := rec.Template
	if rec.Tree != "" {
		name = rec.Tree
	}
	tpl, err := m.templates.Get(name)
	if err != nil {
		return forkSource{}, CreateRequest{}, fmt.Errorf("its template: %w", err)
	}
	if err := os.MkdirAll(m.forksDir(), 0o700); err != nil {
		return forkSource{}, CreateRequest{}, err
	}
	dir := filepath.Join(m.forksDir(), rec.ID+"-"+newID())
	// The capture must end as it began whatever happens to the request:
	// its sandbox paused, then running again.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), hibernateTimeout)
	defer cancel()
	if err := f.Capture(cctx, rec.key(), dir); err != nil {
		return forkSource{}, CreateRequest{}, fmt.Errorf("%s runtime: %w", m.rt.Name(), err)
	}
	base := CreateRequest{Template: rec.Template, Limits: rec.Spec.Limits, DenyInternet: !rec.Internet, EnvdToken: rec.EnvdToken, Owner: rec.Owner}
	return forkSource{dir: dir, tpl: tpl, tree: rec.Tree, token: rec.EnvdToken}, base, nil
}

// forksDir holds the captures of forks in progress; what an agent that
// stopped left there is removed at start-up.
func (m *Manager) forksDir() string {
	return filepath.Join(m.cfg.DataDir, "snapshots", "forks")
}
