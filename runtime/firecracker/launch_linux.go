package firecracker

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"roost.dev/roost/runtime/console"
	"roost.dev/roost/runtime/microvm"
)

// launchTimeout bounds how long Firecracker may take to answer on its
// API socket.
const launchTimeout = 10 * time.Second

// command is the Firecracker process of m, jailed (see jail_linux.go):
// its API socket in the jail, --id naming the sandbox (for Prune). The
// network namespace is the launcher's to enter (Machine.Start starts the
// command from a thread inside it, as `ip netns exec` would).
func (v *vmm) command(m *microvm.Machine) (*exec.Cmd, error) {
	if v.noJail {
		cmd := exec.Command(v.cfg.Firecracker, "--api-sock", paths(m.StateDir).api, "--id", microvm.NamePrefix+m.ID)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Unshareflags: syscall.CLONE_NEWNS}
		// In the jail's directory, for the paths vmPath gives.
		cmd.Dir = jailDir(m.StateDir)
		return cmd, nil
	}
	fc, err := exec.LookPath(v.cfg.Firecracker)
	if err != nil {
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	if fc, err = filepath.Abs(fc); err != nil {
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	j := jail{stateDir: m.StateDir, id: m.ID, uid: m.UID, netns: m.Netns, jailer: v.jailer}
	if err := j.prepare(fc, v.cfg.Kernel, v.cfg.Initrd); err != nil {
		return nil, err
	}
	// Firecracker attaches to the TAP device by name, as its uid.
	if err := microvm.ChownTap(m.Netns, m.UID); err != nil {
		return nil, err
	}
	return j.command(fc)
}

// vmPath is the path Firecracker knows the jail's file hostPath by.
// Unjailed, it is relative to the jail's directory, where Firecracker
// runs: a snapshot records its disk's path, and a fork's Firecracker must
// find its own disk there, not the captured sandbox's.
func (v *vmm) vmPath(hostPath string) string {
	switch {
	case hostPath == "":
		return ""
	case v.noJail:
		return filepath.Base(hostPath)
	}
	return inJail(hostPath)
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
	cmd, err := v.command(m)
	if err != nil {
		return err
	}
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
