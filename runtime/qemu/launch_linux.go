package qemu

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/console"
	"roost.dev/roost/runtime/microvm"
	"roost.dev/roost/runtime/vmimage"
)

// launchTimeout bounds how long QEMU may take to open its QMP socket.
const launchTimeout = 15 * time.Second

// withQMP runs fn on a fresh QMP session with m's QEMU. The driver holds
// no QMP connection between calls: QEMU serves one QMP client at a time,
// and a connection per operation means an agent that restarts (or a
// second driver) never finds the socket taken.
func withQMP(ctx context.Context, m *microvm.Machine, fn func(*qmp) error) error {
	if !m.Running() {
		return fmt.Errorf("sandbox %s has no running vm: %w", m.ID, errdefs.ErrConflict)
	}
	m.CtlMu.Lock()
	defer m.CtlMu.Unlock()
	q, err := dialQMP(ctx, paths(m.StateDir).qmp)
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
		console:  filepath.Join(stateDir, runtime.LogFile), // the guest's serial console
		qemuLog:  filepath.Join(stateDir, qemuLog),
		snapshot: filepath.Join(stateDir, "memory.snap"),
	}
}

// qemuLog is QEMU's own output, in a sandbox's state directory.
const qemuLog = "qemu.log"

// consoleFD is QEMU's descriptor of the console pipe (its first extra
// file). QEMU holds it in an fd set (-add-fd) and gives the chardev a
// duplicate, so nothing reopens the pipe by path (which a VMM running as
// a user of its own could not), and an agent that restarts finds the pipe
// at this descriptor.
const consoleFD = 3

// consoleChardev is the guest serial console's chardev: the console pipe,
// through fd set 1.
const consoleChardev = "file,id=console,path=/dev/fdset/1,append=on"

// consoleArgs is args with the console pipe's fd set added, and the
// console chardev of a command line saved by an older agent (a file path
// in the state directory) replaced by the pipe's, so that a restored
// sandbox's console is bounded too.
func consoleArgs(args []string) []string {
	out := []string{"-add-fd", "fd=" + strconv.Itoa(consoleFD) + ",set=1,opaque=console"}
	for _, a := range args {
		if strings.HasPrefix(a, "file,id=console,") {
			a = consoleChardev
		}
		out = append(out, a)
	}
	return out
}

// args is QEMU's command line for a sandbox. It holds nothing specific to
// the sandbox's slot, so Restore can reuse it on another.
func (v *vmm) args(spec runtime.Spec, lim runtime.Limits, k vmimage.Kernel, p statePaths, image string) []string {
	// Under emulation a fixed, named CPU model: faster to emulate than
	// "max" (the guest picks simpler code paths), and the same on every
	// host, so snapshots restore anywhere.
	accel, cpu := "tcg,tb-size="+strconv.Itoa(tbSizeMB), "Nehalem-v1"
	if *v.cfg.KVM {
		accel, cpu = "kvm", "host"
	}
	args := []string{
		"-name", microvm.NamePrefix + spec.ID,
		"-M", "microvm,x-option-roms=off,pit=off,pic=off,isa-serial=on,rtc=on",
		"-accel", accel, "-cpu", cpu,
		"-m", strconv.Itoa(lim.MemoryMB), "-smp", strconv.Itoa(lim.VCPUs),
		"-nographic", "-nodefaults", "-no-user-config", "-no-reboot",
		"-kernel", k.Vmlinux, "-initrd", k.Initramfs,
		"-append", v.cmdline(spec),
		// The template image is named here, not only in the disk's
		// header, which QEMU's uid can write: the agent opens it for
		// QEMU (confinedArgs). The disk is this QEMU's alone (the agent
		// opens it for no other), so it needs no image lock; with one,
		// a VM that continues after a capture's migration cannot take
		// its disk back (QEMU fails to re-take its write lock).
		"-drive", "id=root,file=" + p.disk + ",format=qcow2,if=none,discard=unmap,file.locking=off,backing.driver=raw,backing.file.filename=" + image,
		"-device", "virtio-blk-device,drive=root",
	}
	args = append(args, volumeArgs(spec.Volumes)...)
	return append(args,
		"-netdev", "tap,id=net0,ifname="+microvm.TapName+",script=no,downscript=no",
		"-device", "virtio-net-device,netdev=net0,mac="+microvm.GuestMAC,
		"-chardev", consoleChardev,
		"-serial", "chardev:console",
		"-qmp", "unix:"+p.qmp+",server=on,wait=off",
	)
}

// tbSizeMB caps QEMU's cache of translated code under emulation (the
// default is 1 GiB), so that QEMU's cgroup can bound its memory; a guest
// that runs more code than fits retranslates some.
const tbSizeMB = 256

// groups are the supplementary groups QEMU runs with: the one that may
// open /dev/kvm, under KVM.
func (v *vmm) groups() []uint32 {
	if !*v.cfg.KVM {
		return nil
	}
	return kvmGroup("/dev/kvm")
}

// cmdline is the guest kernel's command line: quiet boot, the TSC
// frequency under emulation (without it the kernel's calibration against
// an emulated timer is slow and sometimes hangs), and roost's guest
// parameters (the contract with package guest, which parses them).
func (v *vmm) cmdline(spec runtime.Spec) string {
	w := []string{"console=ttyS0", "reboot=t", "panic=-1", "quiet", "loglevel=4", "mitigations=off", "audit=0", "nowatchdog", "random.trust_cpu=on",
		// Boot-time savers: crypto self-tests take a third of a second
		// under emulation, and there is no PS/2 controller to probe.
		"cryptomgr.notests", "i8042.noaux", "i8042.nopnp", "8250.nr_uarts=1"}
	if !*v.cfg.KVM {
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

// launch starts QEMU with m.Args inside the sandbox's network namespace
// (it opens the TAP device there by name) and connects to its QMP
// socket. With incoming, QEMU waits for a migration stream (-incoming
// defer) with its vCPUs stopped (-S).
func (v *vmm) launch(ctx context.Context, m *microvm.Machine, incoming bool) error {
	p := paths(m.StateDir)
	_ = os.Remove(p.qmp)
	args := m.Args
	if incoming {
		args = append(slices.Clone(args), "-S", "-incoming", "defer")
	}
	// The guest's serial console and QEMU's own messages (some of which
	// the guest causes) reach their logs through pipes the agent drains
	// within bounds.
	logf, err := console.Pipe(m.Log, p.qemuLog)
	if err != nil {
		return fmt.Errorf("qemu log: %w", err)
	}
	defer logf.Close()
	consf, err := console.Pipe(m.Log, p.console)
	if err != nil {
		return fmt.Errorf("console log: %w", err)
	}
	defer consf.Close()
	cargs, files, err := v.confinedArgs(m, consoleArgs(args), consoleFD+1)
	if err != nil {
		return err
	}
	defer files.close()
	cmd := exec.Command(v.cfg.QEMU, cargs...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = append([]*os.File{consf}, files.files...) // consoleFD, then confinedArgs's
	cmd.Dir = "/"                                              // the state directory is closed to QEMU's uid
	// Its own session: QEMU outlives the agent, and signals to the
	// agent's process group do not reach it. It runs as the sandbox's
	// VMM uid from its first instruction (Credential), never as root.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: m.Credential(v.groups()...)}
	if cmd.SysProcAttr.Credential == nil {
		return fmt.Errorf("sandbox %s: qemu has no uid of its own", m.ID)
	}
	if err := m.Start(cmd); err != nil {
		return fmt.Errorf("start qemu: %w", err)
	}
	cctx, cancel := m.UntilExit(ctx, launchTimeout)
	defer cancel()
	q, err := dialQMP(cctx, p.qmp)
	if err != nil {
		m.Kill()
		console.Wait(p.qemuLog, time.Second)
		b, _ := os.ReadFile(p.qemuLog)
		return fmt.Errorf("qemu: %w (qemu log: %s)", err, strings.TrimSpace(microvm.LastLines(string(b), 10)))
	}
	return q.close()
}

// command runs a QMP command that takes no arguments.
func command(ctx context.Context, m *microvm.Machine, cmd string) error {
	return withQMP(ctx, m, func(q *qmp) error {
		_, err := q.execute(ctx, cmd, nil)
		return err
	})
}
