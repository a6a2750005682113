package agent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"roost.dev/roost/atomicfile"
	"roost.dev/roost/runtime"
	"roost.dev/roost/template"
)

// Captures of templates. On a runtime that can fork a running sandbox
// (runtime.Forker), a template keeps, for each sandbox shape, a capture
// of a sandbox of it taken once it was ready: booted, envd healthy, and
// the template's start command running and its ready command passed. On
// the namespace runtime only templates with a start command get one: a
// namespace sandbox starts in milliseconds, faster than a CRIU restore,
// but a start command (the code interpreter's kernel) may take longer. Creates fork the capture instead of booting and running
// the start command again; the first create of a template and shape
// boots, and has the capture made in the background for the next ones.
// A capture is made of a sandbox of its own, which no client ever sees:
// it has no identity yet (no env vars, token or metadata), as E2B's start
// command runs at build time, before any sandbox has one.

// maxCaptures bounds the captures a host keeps (each holds the memory its
// sandbox had touched: tens to hundreds of MiB); the least recently
// forked go first.
const maxCaptures = 16

// captureTimeout bounds making a capture: a boot, the start command's
// readiness, and writing the memory (seconds per 100 MiB under emulation).
const captureTimeout = 10 * time.Minute

// captureRetry is how long after a failed capture of a template creates
// of it boot without trying again (each try boots a VM): its start
// command may need what only a client's create gives (env vars).
const captureRetry = 10 * time.Minute

// captureIDPrefix marks the sandboxes captures are made of.
const captureIDPrefix = "ready-"

// captureSource is what the agent keeps beside a capture (<key>.json):
// the template tree it was made from and that tree's stamp then, so that
// a rebuilt or removed template's captures are swept.
type captureSource struct {
	Template string    `json:"template"`
	RootFS   string    `json:"rootfs"`
	Stamp    string    `json:"stamp"`
	Created  time.Time `json:"created"`
}

func (m *Manager) capturesDir() string {
	return filepath.Join(m.cfg.DataDir, "snapshots", "ready")
}

// captureFor is the capture a create on rt from tpl forks, by its key:
// "" when rt cannot fork, or boots faster than it forks (a namespace
// sandbox of a template with no start command), or the create is one a
// capture is made of, or a build's.
func (m *Manager) captureFor(rt runtime.Runtime, tpl template.Template, req CreateRequest) (runtime.Forker, string) {
	f, ok := rt.(runtime.Forker)
	bootsFaster := !rt.Capabilities().VM && tpl.StartCmd == ""
	// A capture holds no volume: a create that mounts one boots.
	if !ok || bootsFaster || req.capture || req.buildRoot != "" || req.fork != nil || len(req.Volumes) > 0 {
		return nil, ""
	}
	stamp, err := template.Stamp(tpl.RootFS)
	if err != nil {
		return nil, ""
	}
	envd, err := m.envdSum()
	if err != nil {
		m.log.Warn("template captures: envd binary unreadable", "err", err)
		return nil, ""
	}
	h := sha256.New()
	env := slices.Sorted(maps.Keys(tpl.Env))
	for _, k := range env {
		fmt.Fprintf(h, "env %q=%q\n", k, tpl.Env[k])
	}
	fmt.Fprintf(h, "v1\n%s\n%s\n%s\n%s\n%d %d %d\n%q\n%q\n%q %q\n", rt.Name(), tpl.RootFS, stamp, envd,
		req.Limits.VCPUs, req.Limits.MemoryMB, req.Limits.DiskMB, tpl.StartCmd, tpl.ReadyCmd, tpl.DefaultUser, tpl.Workdir)
	return f, hex.EncodeToString(h.Sum(nil)[:16])
}

// envdSum is the digest of the envd binary sandboxes get: a capture
// holds the envd that ran then, so a new envd needs new captures.
func (m *Manager) envdSum() (string, error) {
	m.captureMu.Lock()
	defer m.captureMu.Unlock()
	if m.envdDigest != "" {
		return m.envdDigest, nil
	}
	f, err := os.Open(m.cfg.Envd)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	m.envdDigest = hex.EncodeToString(h.Sum(nil))
	return m.envdDigest, nil
}

// startRuntime starts the runtime's part of a sandbox: a fork of the
// sandbox it forks (Fork), or of its template's capture when there is
// one, else a boot. A template's capture that cannot be forked (a
// template image gone, a VMM that changed) is dropped, and the sandbox
// boots.
func (m *Manager) startRuntime(ctx context.Context, rt runtime.Runtime, spec runtime.Spec, tpl template.Template, req CreateRequest) (inst runtime.Instance, forked bool, err error) {
	if req.fork != nil {
		inst, err := rt.(runtime.Forker).Fork(ctx, spec, req.fork.dir)
		return inst, true, err
	}
	if f, key := m.captureFor(rt, tpl, req); key != "" {
		dir := filepath.Join(m.capturesDir(), key)
		if _, err := os.Stat(dir); err == nil {
			inst, err := f.Fork(ctx, spec, dir)
			if err == nil {
				now := time.Now()
				_ = os.Chtimes(dir+".json", now, now) // recently used
				return inst, true, nil
			}
			if ctx.Err() != nil {
				return inst, false, err
			}
			m.log.Warn("template capture cannot be forked; dropped, booting instead", "sandbox", spec.ID, "capture", key, "err", err)
			m.dropCapture(key)
		}
	}
	inst, err = rt.Create(ctx, spec)
	return inst, false, err
}

// forkIdentity is what envd's /init gives a fork beyond a boot's: its
// own hostname, and for a VM (a kernel of its own) fresh random state
// for its kernel.
func forkIdentity(init *envdInit, hostname string, vm bool) error {
	init.Hostname = hostname
	if !vm {
		return nil
	}
	init.Entropy = make([]byte, 64)
	_, err := rand.Read(init.Entropy)
	return err
}

// captureLater has a capture of tpl made in the background for creates
// like req, unless there is one, or one is being made.
func (m *Manager) captureLater(rt runtime.Runtime, tpl template.Template, req CreateRequest) {
	f, key := m.captureFor(rt, tpl, req)
	if key == "" {
		return
	}
	if _, err := os.Stat(filepath.Join(m.capturesDir(), key)); err == nil {
		return
	}
	m.captureMu.Lock()
	defer m.captureMu.Unlock()
	if m.capturing[key] || time.Since(m.captureFailed[key]) < captureRetry || m.ctx.Err() != nil {
		return
	}
	m.capturing[key] = true
	m.wg.Go(func() {
		begin := time.Now()
		err := m.makeCapture(f, key, tpl, req)
		m.captureMu.Lock()
		delete(m.capturing, key)
		if err != nil {
			m.captureFailed[key] = time.Now()
		}
		m.captureMu.Unlock()
		if err != nil {
			m.log.Warn("template capture not made; creates boot", "template", req.Template, "capture", key, "retry_after", captureRetry, "err", err)
			return
		}
		m.log.Info("template capture made", "template", req.Template, "capture", key, "duration", time.Since(begin))
	})
}

// makeCapture starts a sandbox of req's template and shape, with no
// identity, waits for it to be ready, captures it under key, and removes
// it.
func (m *Manager) makeCapture(f runtime.Forker, key string, tpl template.Template, req CreateRequest) error {
	ctx, cancel := context.WithTimeout(m.ctx, captureTimeout)
	defer cancel()
	creq, err := CreateRequest{Template: req.Template, TemplateRef: req.TemplateRef, Limits: req.Limits}.normalize(m.host)
	if err != nil {
		return err
	}
	creq.ID, creq.capture = captureIDPrefix+newID(), true
	sb, err := m.startInternal(ctx, nil, creq)
	if err != nil {
		return err
	}
	defer m.destroyBuildSandbox(sb)
	if err := os.MkdirAll(m.capturesDir(), 0o700); err != nil {
		return err
	}
	dir := filepath.Join(m.capturesDir(), key)
	tmp := dir + ".tmp-" + creq.ID
	if err := f.Capture(ctx, creq.ID, tmp); err != nil {
		return err
	}
	stamp, err := template.Stamp(tpl.RootFS)
	if err == nil {
		err = writeJSON(dir+".json", captureSource{Template: req.Template, RootFS: tpl.RootFS, Stamp: stamp, Created: time.Now().UTC()})
	}
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	m.sweepCaptures()
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// dropCapture removes the capture key; forks running from it are not
// affected.
func (m *Manager) dropCapture(key string) {
	dir := filepath.Join(m.capturesDir(), key)
	if err := errors.Join(os.RemoveAll(dir), os.Remove(dir+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.log.Warn("template capture not removed", "capture", key, "err", err)
	}
}

// sweepCaptures removes what a crash left of captures being made, the
// captures of templates that are gone or were rebuilt, and the least
// recently forked beyond maxCaptures.
func (m *Manager) sweepCaptures() {
	entries, err := os.ReadDir(m.capturesDir())
	if err != nil {
		return
	}
	type kept struct {
		key  string
		used time.Time
	}
	var live []kept
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.Contains(name, ".tmp-"):
			if !m.makingCapture(name) {
				_ = os.RemoveAll(filepath.Join(m.capturesDir(), name))
			}
		case !e.IsDir():
			// A capture's source with no capture: what a drop left.
			if key, ok := strings.CutSuffix(name, ".json"); ok {
				if _, err := os.Stat(filepath.Join(m.capturesDir(), key)); errors.Is(err, fs.ErrNotExist) {
					_ = os.Remove(filepath.Join(m.capturesDir(), name))
				}
			}
		default:
			src, used, err := readCaptureSource(filepath.Join(m.capturesDir(), name+".json"))
			if stamp, serr := template.Stamp(src.RootFS); err != nil || serr != nil || stamp != src.Stamp {
				m.log.Info("template capture removed", "capture", name, "reason", "its template is gone or was rebuilt")
				m.dropCapture(name)
				continue
			}
			live = append(live, kept{name, used})
		}
	}
	slices.SortFunc(live, func(a, b kept) int { return b.used.Compare(a.used) })
	for _, c := range live[min(len(live), maxCaptures):] {
		m.log.Info("template capture removed", "capture", c.key, "reason", "least recently used", "max", maxCaptures)
		m.dropCapture(c.key)
	}
}

// makingCapture reports whether the temporary directory name is one a
// capture is being written into now.
func (m *Manager) makingCapture(name string) bool {
	key, _, _ := strings.Cut(name, ".tmp-")
	m.captureMu.Lock()
	defer m.captureMu.Unlock()
	return m.capturing[key]
}

func readCaptureSource(path string) (captureSource, time.Time, error) {
	var src captureSource
	st, err := os.Stat(path)
	if err != nil {
		return src, time.Time{}, err
	}
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &src)
	}
	return src, st.ModTime(), err
}
