package guest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"roost.dev/roost/wire"
)

// Paths of roost's files in the guest: the image pipeline puts them there.
const (
	// InitPath is this program on the root disk.
	InitPath = "/.roost/init"
	// EnvdPath is envd on the root disk.
	EnvdPath = "/.roost/envd"
	// ModulesDir holds the initramfs's kernel modules; ModuleOrder lists
	// their file names, one a line, dependencies first.
	ModulesDir  = "/modules"
	ModuleOrder = "/modules/order"
)

// envdArgs are envd's flags in a VM: those of a namespace sandbox, and
// -guest, since after a snapshot restore only the /init timestamp tells
// the guest how much time went by, and a fork learns its hostname and
// gets its own random state only from /init.
var envdArgs = []string{"-addr", fmt.Sprintf("0.0.0.0:%d", wire.EnvdPort), "-forward-ports", "-local-envs", "-reserve-threads", "12", "-guest"}

// Main is PID 1. It never returns: on a fatal error it logs to the
// console and powers the machine off, so the host sees the VM exit
// instead of a kernel panic loop.
func Main() {
	logf("roost guest init starting")
	if err := boot(); err != nil {
		logf("fatal: %v", err)
		powerOff()
	}
	envd, err := startEnvd()
	if err != nil {
		logf("fatal: %v", err)
		powerOff()
	}
	supervise(envd)
}

// logf writes to the console with the time since boot, to tell where a
// slow boot spends its time.
func logf(format string, args ...any) {
	at := "-" // before /proc is mounted
	if up, err := os.ReadFile("/proc/uptime"); err == nil {
		at, _, _ = strings.Cut(string(up), " ")
	}
	fmt.Fprintf(os.Stderr, "roost-init [%s]: "+format+"\n", append([]any{at}, args...)...)
}

var cfg Config

func boot() error {
	if err := mountEarly(); err != nil {
		return err
	}
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	if cfg, err = ParseCmdline(string(b)); err != nil {
		return err
	}
	if _, err := os.Stat(ModuleOrder); err == nil {
		// We run from the initramfs: load the drivers, then move onto the root disk.
		if err := loadModules(); err != nil {
			return err
		}
		if err := switchRoot(cfg.Root); err != nil {
			return err
		}
	}
	logf("root mounted")
	if err := mountLate(); err != nil {
		return err
	}
	if !cfg.Clock.IsZero() && time.Now().Before(cfg.Clock) {
		tv := syscall.NsecToTimeval(cfg.Clock.UnixNano())
		if err := syscall.Settimeofday(&tv); err != nil {
			logf("set clock: %v", err)
		}
	}
	if cfg.Hostname != "" {
		if err := syscall.Sethostname([]byte(cfg.Hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	if err := writeIdentity(); err != nil {
		return err
	}
	if err := mountVolumes(); err != nil {
		return err
	}
	return configureNetwork()
}

type mnt struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

func mountAll(ms []mnt) error {
	for _, m := range ms {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		err := syscall.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		if err != nil && !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

const nsd = syscall.MS_NOSUID | syscall.MS_NODEV

func mountEarly() error {
	return mountAll([]mnt{
		{"proc", "/proc", "proc", nsd | syscall.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", nsd | syscall.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", syscall.MS_NOSUID, "mode=0755"},
	})
}

func mountLate() error {
	if err := mountAll([]mnt{
		{"devpts", "/dev/pts", "devpts", syscall.MS_NOSUID | syscall.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{"shm", "/dev/shm", "tmpfs", nsd, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", nsd, "mode=0755"},
	}); err != nil {
		return err
	}
	// /tmp stays on the disk, as in a namespace sandbox: a tmpfs would
	// take what is written there out of the guest's memory.
	if err := os.MkdirAll("/tmp", 0o1777); err != nil {
		return err
	}
	if err := os.Chmod("/tmp", 0o777|os.ModeSticky); err != nil {
		return err
	}
	_ = os.Remove("/dev/ptmx")
	if err := os.Symlink("pts/ptmx", "/dev/ptmx"); err != nil {
		return err
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		_ = os.Symlink(target, "/dev/"+name)
	}
	return nil
}

// loadModules loads the initramfs's modules in the order the image
// pipeline resolved, passing module parameters from the command line.
func loadModules() error {
	f, err := os.Open(ModuleOrder)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" {
			continue
		}
		mod := strings.ReplaceAll(strings.TrimSuffix(name, ".ko"), "-", "_")
		if err := loadModule(filepath.Join(ModulesDir, name), strings.Join(cfg.Modules[mod], " ")); err != nil {
			// Optional accelerations (crc32c-intel on a CPU without
			// SSE4.2) fail harmlessly; a missing driver shows up below.
			logf("load module %s: %v", name, err)
		}
	}
	return sc.Err()
}

func loadModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = finitModule(f, params)
	if errors.Is(err, syscall.EEXIST) {
		return nil
	}
	return err
}

// finitModule loads the kernel module in f with finit_module(2), which the
// syscall package has no wrapper for.
func finitModule(f *os.File, params string) error {
	p, err := syscall.BytePtrFromString(params)
	if err != nil {
		return err
	}
	_, _, errno := syscall.Syscall(sysFinitModule, f.Fd(), uintptr(unsafe.Pointer(p)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// switchRoot mounts the root disk and makes it /, moving the kernel
// filesystems along and freeing the initramfs's files.
func switchRoot(dev string) error {
	if err := waitFor(dev, 10*time.Second); err != nil {
		return err
	}
	const newRoot = "/newroot"
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(dev, newRoot, "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount root %s: %w", dev, err)
	}
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		if err := os.MkdirAll(newRoot+d, 0o755); err != nil {
			return err
		}
		if err := syscall.Mount(d, newRoot+d, "", syscall.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s: %w", d, err)
		}
	}
	// The initramfs cannot be unmounted; empty it so it frees its memory.
	entries, _ := os.ReadDir("/")
	for _, e := range entries {
		if e.Name() != "newroot" {
			_ = os.RemoveAll("/" + e.Name())
		}
	}
	if err := syscall.Chdir(newRoot); err != nil {
		return err
	}
	if err := syscall.Mount(".", "/", "", syscall.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move root: %w", err)
	}
	if err := syscall.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return syscall.Chdir("/")
}

func waitFor(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear in %s (no driver for it?)", path, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func writeIdentity() error {
	name := cfg.Hostname
	if name == "" {
		name = "localhost"
	}
	var resolv strings.Builder
	for _, a := range cfg.DNS {
		fmt.Fprintf(&resolv, "nameserver %s\n", a)
	}
	files := map[string]string{
		"/etc/hostname": name + "\n",
		"/etc/hosts":    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + name + "\n",
	}
	if len(cfg.DNS) > 0 {
		files["/etc/resolv.conf"] = resolv.String()
	}
	for p, body := range files {
		_ = os.Remove(p) // it may be a symlink
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

func startEnvd() (int, error) {
	pid, err := spawn(EnvdPath, append([]string{"envd"}, envdArgs...), cfg.envList())
	if err != nil {
		return 0, fmt.Errorf("start envd: %w", err)
	}
	logf("envd started, pid %d", pid)
	return pid, nil
}

// beforeFork runs between opening the child's stdin and forking; a test
// collects garbage there.
var beforeFork = func() {}

// spawn starts path in a new session, in /, with /dev/null as stdin and
// this process's stderr (the console) as stdout and stderr.
func spawn(path string, args, env []string) (int, error) {
	stdin := uintptr(0) // without /dev/null, ours
	null, err := os.Open("/dev/null")
	if err == nil {
		// null stays referenced until ForkExec returned (the deferred
		// Close): an unreferenced *os.File may be closed by its finalizer
		// first, leaving the child a closed or reused descriptor.
		defer null.Close()
		stdin = null.Fd()
	}
	beforeFork()
	return syscall.ForkExec(path, args, &syscall.ProcAttr{
		Dir:   "/",
		Env:   env,
		Files: []uintptr{stdin, 2, 2},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
}

// supervise reaps every orphan and powers off when envd ends or when
// asked: SIGTERM, SIGPWR, or SIGINT (what the kernel sends init on
// ctrl-alt-del).
func supervise(envd int) {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT, syscall.SIGPWR)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	go func() {
		s := <-stop
		logf("%s: powering off", s)
		shutdown()
	}()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if errors.Is(err, syscall.ECHILD) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if pid == envd {
			logf("envd exited (%v): powering off", ws)
			shutdown()
		}
	}
}

// shutdown ends every process, flushes the disk and powers off.
func shutdown() {
	_ = syscall.Kill(-1, syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	_ = syscall.Kill(-1, syscall.SIGKILL)
	powerOff()
}

func powerOff() {
	syscall.Sync()
	unmountVolumes()
	_ = syscall.Mount("", "/", "", syscall.MS_REMOUNT|syscall.MS_RDONLY, "")
	_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	// Not reached unless reboot(2) failed; PID 1 exiting panics the kernel,
	// which with panic=-1 also ends the VM.
	os.Exit(1)
}
