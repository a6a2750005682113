package firecracker

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"time"

	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
)

// launchTimeout bounds how long Firecracker may take to answer on its
// API socket.
const launchTimeout = 10 * time.Second

// handle is one sandbox the driver runs.
type handle struct {
	rec    record
	exited <-chan struct{} // closed when Firecracker exits; nil for re-adopted sandboxes
	log    *slog.Logger
}

func (h *handle) api() *api { return newAPI(paths(h.rec.StateDir).api) }

func (h *handle) instance() runtime.Instance {
	addr, _ := netip.ParseAddrPort(h.rec.EnvdAddr)
	return runtime.Instance{ID: h.rec.ID, Envd: addr, Pid: h.rec.Pid, Started: h.rec.Started}
}

// command is the Firecracker process of a sandbox, as the launcher starts
// it: its API socket in the state directory, --id naming the sandbox (for
// Prune), its own session (it outlives the agent, and signals to the
// agent's process group do not reach it) and a private mount namespace
// (what `unshare -m` does: mounts made in it, or the host's later, do not
// propagate either way). The network namespace is the launcher's to
// enter (launch starts the command from a thread inside it, as `ip netns
// exec` would).
func (d *Driver) command(rec record) *exec.Cmd {
	cmd := exec.Command(d.cfg.Firecracker, "--api-sock", paths(rec.StateDir).api, "--id", namePrefix+rec.ID)
	cmd.Dir = rec.StateDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Unshareflags: syscall.CLONE_NEWNS}
	return cmd
}

// launch starts Firecracker for h inside the sandbox's network namespace
// and waits until its API answers. The guest's serial console (what
// Firecracker prints) goes to the console file.
func (d *Driver) launch(ctx context.Context, h *handle) error {
	p := paths(h.rec.StateDir)
	_ = os.Remove(p.api)
	console, err := os.OpenFile(p.console, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("console log: %w", err)
	}
	defer console.Close()
	cmd := d.command(h.rec)
	cmd.Stdout, cmd.Stderr = console, console
	proc, exited, err := microvm.StartVMM(h.rec.Netns, cmd)
	if err != nil {
		return fmt.Errorf("start firecracker: %w", err)
	}
	h.rec.Process, h.exited, h.rec.Started = proc, exited, time.Now().UTC()
	cctx, cancel := microvm.UntilExit(ctx, launchTimeout, exited)
	defer cancel()
	if _, err := h.api().waitReady(cctx); err != nil {
		h.kill()
		b, _ := os.ReadFile(p.console)
		return fmt.Errorf("firecracker: %w (output: %s)", err, microvm.LastLines(string(b), 10))
	}
	return nil
}

// running reports whether Firecracker is up.
func (h *handle) running() bool { return h.rec.Running(h.exited) }

// kill ends Firecracker at once and waits for it to go.
func (h *handle) kill() { h.rec.Kill(h.exited) }

// logTail is the end of Firecracker's own log, for error messages.
func (h *handle) logTail() string {
	b, _ := os.ReadFile(paths(h.rec.StateDir).log)
	return microvm.LastLines(string(b), 5)
}
