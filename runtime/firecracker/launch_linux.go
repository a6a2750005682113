package firecracker

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"roost.dev/roost/runtime/console"
	"roost.dev/roost/runtime/microvm"
)

// launchTimeout bounds how long Firecracker may take to answer on its
// API socket.
const launchTimeout = 10 * time.Second

// command is the Firecracker process of a sandbox, as the launcher starts
// it: its API socket in the state directory, --id naming the sandbox (for
// Prune), its own session (it outlives the agent, and signals to the
// agent's process group do not reach it) and a private mount namespace
// (what `unshare -m` does: mounts made in it, or the host's later, do not
// propagate either way). The network namespace is the launcher's to
// enter (Machine.Start starts the command from a thread inside it, as `ip
// netns exec` would).
func (v *vmm) command(id, stateDir string) *exec.Cmd {
	cmd := exec.Command(v.cfg.Firecracker, "--api-sock", paths(stateDir).api, "--id", microvm.NamePrefix+id)
	cmd.Dir = stateDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Unshareflags: syscall.CLONE_NEWNS}
	return cmd
}

// launch starts Firecracker for m inside the sandbox's network namespace
// and waits until its API answers. The guest's serial console (what
// Firecracker prints) goes to the console file.
func (v *vmm) launch(ctx context.Context, m *microvm.Machine) error {
	p := paths(m.StateDir)
	_ = os.Remove(p.api)
	// The guest's root writes the serial console at will: it reaches the
	// log through a pipe the agent drains within bounds.
	consf, err := console.Pipe(m.Log, p.console)
	if err != nil {
		return fmt.Errorf("console log: %w", err)
	}
	defer consf.Close()
	cmd := v.command(m.ID, m.StateDir)
	cmd.Stdout, cmd.Stderr = consf, consf
	if err := m.Start(cmd); err != nil {
		return fmt.Errorf("start firecracker: %w", err)
	}
	cctx, cancel := m.UntilExit(ctx, launchTimeout)
	defer cancel()
	if _, err := newAPI(p.api).waitReady(cctx); err != nil {
		m.Kill()
		console.Wait(p.console, time.Second)
		b, _ := os.ReadFile(p.console)
		return fmt.Errorf("firecracker: %w (output: %s)", err, microvm.LastLines(string(b), 10))
	}
	return nil
}

// logTail is the end of Firecracker's own log, for error messages.
func logTail(m *microvm.Machine) string {
	b, _ := os.ReadFile(paths(m.StateDir).log)
	return microvm.LastLines(string(b), 5)
}
