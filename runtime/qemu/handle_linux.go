package qemu

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
	"roost.dev/roost/runtime/vmimage"
)

// namePrefix marks roost's QEMU processes (-name roost-ID), for Prune.
const namePrefix = "roost-"

// launchTimeout bounds how long QEMU may take to open its QMP socket.
const launchTimeout = 15 * time.Second

// handle is one sandbox the driver runs.
//
// The driver holds no QMP connection between calls: QEMU serves one QMP
// client at a time, and a connection per operation means an agent that
// restarts (or a second driver) never finds the socket taken.
type handle struct {
	rec    record
	exited <-chan struct{} // closed when QEMU exits; nil for re-adopted sandboxes
	log    *slog.Logger

	qmpMu sync.Mutex // serialises QMP sessions
}

// withQMP runs fn on a fresh QMP session.
func (h *handle) withQMP(ctx context.Context, fn func(*qmp) error) error {
	if !h.running() {
		return fmt.Errorf("sandbox %s has no running vm: %w", h.rec.ID, errdefs.ErrConflict)
	}
	h.qmpMu.Lock()
	defer h.qmpMu.Unlock()
	q, err := dialQMP(ctx, paths(h.rec.StateDir).qmp)
	if err != nil {
		return err
	}
	defer q.close()
	return fn(q)
}

type statePaths struct {
	disk, qmp, console, qemuLog, snapshot string
}

func paths(stateDir string) statePaths {
	return statePaths{
		disk:     filepath.Join(stateDir, "disk.qcow2"),
		qmp:      filepath.Join(stateDir, "qmp.sock"),
		console:  filepath.Join(stateDir, "init.log"), // the guest's serial console
		qemuLog:  filepath.Join(stateDir, "qemu.log"),
		snapshot: filepath.Join(stateDir, "memory.snap"),
	}
}

func (h *handle) instance() runtime.Instance {
	addr, _ := netip.ParseAddrPort(h.rec.EnvdAddr)
	return runtime.Instance{ID: h.rec.ID, Envd: addr, Pid: h.rec.Pid, Started: h.rec.Started}
}

// args is QEMU's command line for a sandbox. It holds nothing specific to
// the sandbox's slot, so Restore can reuse it on another.
func (d *Driver) args(spec runtime.Spec, lim runtime.Limits, k vmimage.Kernel, p statePaths) []string {
	// Under emulation a fixed, named CPU model: faster to emulate than
	// "max" (the guest picks simpler code paths), and the same on every
	// host, so snapshots restore anywhere.
	accel, cpu := "tcg", "Nehalem-v1"
	if *d.cfg.KVM {
		accel, cpu = "kvm", "host"
	}
	return []string{
		"-name", namePrefix + spec.ID,
		"-M", "microvm,x-option-roms=off,pit=off,pic=off,isa-serial=on,rtc=on",
		"-accel", accel, "-cpu", cpu,
		"-m", strconv.Itoa(lim.MemoryMB), "-smp", strconv.Itoa(lim.VCPUs),
		"-nographic", "-nodefaults", "-no-user-config", "-no-reboot",
		"-kernel", k.Vmlinux, "-initrd", k.Initramfs,
		"-append", d.cmdline(spec),
		"-drive", "id=root,file=" + p.disk + ",format=qcow2,if=none,discard=unmap",
		"-device", "virtio-blk-device,drive=root",
		"-netdev", "tap,id=net0,ifname=" + microvm.TapName + ",script=no,downscript=no",
		"-device", "virtio-net-device,netdev=net0,mac=" + microvm.GuestMAC,
		"-chardev", "file,id=console,path=" + p.console + ",append=on",
		"-serial", "chardev:console",
		"-qmp", "unix:" + p.qmp + ",server=on,wait=off",
	}
}

// cmdline is the guest kernel's command line: quiet boot, the TSC
// frequency under emulation (without it the kernel's calibration against
// an emulated timer is slow and sometimes hangs), and roost's guest
// parameters (the contract with package guest, which parses them).
func (d *Driver) cmdline(spec runtime.Spec) string {
	w := []string{"console=ttyS0", "reboot=t", "panic=-1", "quiet", "loglevel=4", "mitigations=off", "audit=0", "nowatchdog", "random.trust_cpu=on",
		// Boot-time savers: crypto self-tests take a third of a second
		// under emulation, and there is no PS/2 controller to probe.
		"cryptomgr.notests", "i8042.noaux", "i8042.nopnp", "8250.nr_uarts=1"}
	if !*d.cfg.KVM {
		w = append(w, "tsc=reliable")
		if khz := hostTSCkHz(); khz > 0 {
			w = append(w, "tsc_early_khz="+strconv.Itoa(khz))
		}
	}
	w = append(w, microvm.GuestParams(spec, "/dev/vda")...)
	return strings.Join(w, " ")
}

// hostTSCkHz is the host CPU's nominal frequency, which is what an
// emulated guest's TSC ticks at (TCG reads the host's TSC).
func hostTSCkHz() int {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(mhz * 1000)
			}
		}
	}
	return 0
}

// launch starts QEMU with h.rec.Args inside the sandbox's network
// namespace (it opens the TAP device there by name) and connects to its
// QMP socket. With incoming, QEMU waits for a migration stream (-incoming
// defer) with its vCPUs stopped (-S).
func (d *Driver) launch(ctx context.Context, h *handle, netns string, incoming bool) error {
	p := paths(h.rec.StateDir)
	_ = os.Remove(p.qmp)
	args := h.rec.Args
	if incoming {
		args = append(append([]string{}, args...), "-S", "-incoming", "defer")
	}
	logf, err := os.OpenFile(p.qemuLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("qemu log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(d.cfg.QEMU, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = h.rec.StateDir
	// Its own session: QEMU outlives the agent, and signals to the
	// agent's process group do not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	proc, exited, err := microvm.StartVMM(netns, cmd)
	if err != nil {
		return fmt.Errorf("start qemu: %w", err)
	}
	h.rec.Process, h.exited, h.rec.Started = proc, exited, time.Now().UTC()
	cctx, cancel := microvm.UntilExit(ctx, launchTimeout, exited)
	defer cancel()
	q, err := dialQMP(cctx, p.qmp)
	if err != nil {
		h.kill()
		b, _ := os.ReadFile(p.qemuLog)
		return fmt.Errorf("qemu: %w (qemu log: %s)", err, strings.TrimSpace(microvm.LastLines(string(b), 10)))
	}
	return q.close()
}

// running reports whether QEMU is up.
func (h *handle) running() bool { return h.rec.Running(h.exited) }

// command runs a QMP command that takes no arguments.
func (h *handle) command(ctx context.Context, cmd string) error {
	return h.withQMP(ctx, func(q *qmp) error {
		_, err := q.execute(ctx, cmd, nil)
		return err
	})
}

// stop asks QEMU to quit and kills it if it has not within ctx.
func (h *handle) stop(ctx context.Context) {
	if h.rec.Pid == 0 {
		return
	}
	if h.running() {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = h.command(qctx, "quit")
		cancel()
		if h.rec.WaitExit(ctx, h.exited, 5*time.Second) {
			return
		}
	}
	h.kill()
}

// kill ends QEMU at once and waits for it to go.
func (h *handle) kill() { h.rec.Kill(h.exited) }

func (h *handle) stats() (runtime.Stats, error) {
	st, err := h.rec.Process.Stats(h.rec.MemoryMB)
	if err != nil {
		return st, fmt.Errorf("sandbox %s: %w", h.rec.ID, err)
	}
	return st, nil
}
