package namespace

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"roost.dev/roost/atomicfile"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime/proc"
)

// DefaultCRIU is where scripts/criu.sh installs CRIU when the host's own
// does not work on its kernel: a wrapper that runs CRIU from a Debian tree
// of its own with that tree's libraries.
const DefaultCRIU = "/usr/local/lib/roost/criu/criu"

// criuTool is the CRIU command the driver hibernates with, found once.
type criuTool struct {
	path string
	err  error // why there is none: wraps errdefs.ErrUnsupported
}

// criu returns the CRIU command (Config.CRIU, else a working `criu` on
// PATH, else DefaultCRIU), checked once with `criu check` and its version
// against the kernel, or why the host has none.
func (d *Driver) criu() (string, error) {
	d.criuOnce.Do(func() {
		onDisk := kerndatOnDisk()
		if onDisk {
			// A cache from before this start may be another kernel's or
			// another CRIU's: CRIU checks the one it is given only by size.
			_ = os.Remove(kerndatCache)
		}
		d.criuTool = findCRIU(d.cfg.CRIU)
		if d.criuTool.err != nil || !onDisk {
			return
		}
		if err := primeKerndat(d.criuTool.path); err != nil {
			d.log.Warn("CRIU's kernel-feature cache not made: every hibernation and restore detects the kernel's features again", "criu", d.criuTool.path, "err", err)
		}
	})
	return d.criuTool.path, d.criuTool.err
}

func findCRIU(configured string) criuTool {
	candidates := []string{configured}
	if configured == "" {
		candidates = nil
		if p, err := exec.LookPath("criu"); err == nil {
			candidates = append(candidates, p)
		}
		candidates = append(candidates, DefaultCRIU)
	}
	var why []string
	for _, c := range candidates {
		if err := checkCRIU(c); err != nil {
			why = append(why, err.Error())
			continue
		}
		return criuTool{path: c}
	}
	if len(why) == 0 {
		why = append(why, "no criu on PATH and none at "+DefaultCRIU+" (run scripts/criu.sh)")
	}
	return criuTool{err: fmt.Errorf("no usable CRIU: %s: %w", strings.Join(why, "; "), errdefs.ErrUnsupported)}
}

// checkCRIU runs `criu check` and refuses a CRIU too old for the kernel:
// before 4.2, CRIU cannot dump a TCP socket on Linux 6.16 or later (it asks
// for SO_PASSCRED, which those kernels refuse on inet sockets), and every
// sandbox has one (envd's).
func checkCRIU(path string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s --version: %v", path, err)
	}
	v, ok := parseVersion(string(out), `Version: (\d+)\.(\d+)`)
	if !ok {
		return fmt.Errorf("%s: no version in %q", path, strings.TrimSpace(string(out)))
	}
	if k, ok := kernelVersion(); ok && atLeast(k, [2]int{6, 16}) && !atLeast(v, [2]int{4, 2}) {
		return fmt.Errorf("%s is CRIU %d.%d; this kernel needs 4.2 or later (run scripts/criu.sh)", path, v[0], v[1])
	}
	if out, err := exec.Command(path, "check").CombinedOutput(); err != nil {
		return fmt.Errorf("%s check: %s", path, lastLine(string(out)))
	}
	return nil
}

// kerndatCache is where CRIU, run as root, keeps what it detected of the
// kernel's features (KDAT_RUNDIR in its build), and kerndatRun the
// directory it must be on a tmpfs in.
const (
	kerndatRun   = "/run"
	kerndatCache = kerndatRun + "/criu.kdat"
)

// kerndatOnDisk says whether /run is not a tmpfs, where CRIU cannot keep
// its kernel-feature cache itself (a container, a host without systemd).
func kerndatOnDisk() bool {
	var st unix.Statfs_t
	return unix.Statfs(kerndatRun, &st) == nil && st.Type != unix.TMPFS_MAGIC
}

// primeKerndat gives CRIU its kernel-feature cache where /run is not a
// tmpfs. Without it every CRIU run detects the kernel's features again
// (forking iptables, making namespaces, ptracing a child): about 85 ms of
// each restore on a slow host. CRIU writes the cache only on a tmpfs (as
// /run is under systemd, so it is gone at reboot), but reads it from any
// filesystem. So criu checks the kernel in a mount namespace of its own
// whose /run is a new tmpfs, and the cache it wrote there is copied into
// the host's /run. The driver does so at its start, after it removed the
// cache an earlier start left: one outlives neither a kernel nor a CRIU
// upgrade by more than an agent restart.
func primeKerndat(criu string) error {
	cmd := exec.Command("/bin/sh", "-c", `mount -t tmpfs roost-kerndat "$1" && "$0" check >/dev/null && cat "$2"`, criu, kerndatRun, kerndatCache)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS} // Go makes / private in it
	var stderr strings.Builder
	cmd.Stderr = &stderr
	data, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("criu check in a mount namespace of its own: %v: %s", err, lastLine(stderr.String()))
	}
	if len(data) == 0 {
		return errors.New("criu check wrote no cache")
	}
	return atomicfile.Write(kerndatCache, data, 0o600)
}

func parseVersion(s, pattern string) ([2]int, bool) {
	m := regexp.MustCompile(pattern).FindStringSubmatch(s)
	if m == nil {
		return [2]int{}, false
	}
	a, _ := strconv.Atoi(m[1])
	b, _ := strconv.Atoi(m[2])
	return [2]int{a, b}, true
}

func kernelVersion() ([2]int, bool) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return [2]int{}, false
	}
	return parseVersion(unix.ByteSliceToString(u.Release[:]), `^(\d+)\.(\d+)`)
}

func atLeast(v, min [2]int) bool { return v[0] > min[0] || v[0] == min[0] && v[1] >= min[1] }

// runCRIU runs criu with args from a thread in the network namespace at
// netns (CRIU then treats the sandbox's network namespace as its own:
// neither dumps nor recreates it, and a restore lands in the one given),
// with files as its descriptors 3 and up. On failure the error carries
// CRIU's first error line from logFile.
func runCRIU(ctx context.Context, criu, netns, logFile string, files []*os.File, args ...string) error {
	cmd := exec.CommandContext(ctx, criu, args...)
	cmd.ExtraFiles = files
	out, err := runIn(netns, cmd)
	if err == nil {
		return nil
	}
	reason := criuErrors(logFile)
	if reason == "" {
		reason = lastLine(out)
	}
	if reason == "" {
		reason = err.Error()
	}
	return errors.New(reason)
}

func runIn(netns string, cmd *exec.Cmd) (string, error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := proc.InNetns(netns, cmd.Run)
	return out.String(), err
}

// criuError matches the lines of CRIU's log that say what failed, and
// keeps the message.
var criuError = regexp.MustCompile(`Error \([^)]*\): (.*)$`)

// maxCRIUErrors bounds how many of CRIU's error lines a failure carries.
const maxCRIUErrors = 4

// criuErrors are the distinct errors CRIU logged in path, worth showing
// (the rlimit complaint every run logs is not), joined in the order
// logged: the first says where CRIU stopped ("Timeout reached" when a
// step hung), the ones after it what it was doing.
func criuErrors(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var errs []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() && len(errs) < maxCRIUErrors {
		m := criuError.FindStringSubmatch(sc.Text())
		if m == nil || strings.HasPrefix(m[1], "rlimit:") {
			continue
		}
		if msg := strings.TrimSpace(m[1]); !slices.Contains(errs, msg) {
			errs = append(errs, msg)
		}
	}
	return strings.Join(errs, "; ")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// imagesDir is where a hibernated sandbox's CRIU images are.
func imagesDir(stateDir string) string { return filepath.Join(stateDir, "hibernation") }

// exeID tells a version of an executable apart without reading it.
type exeID struct {
	dev, ino uint64
	size     int64
	mtime    unix.Timespec
}

// keepExe keeps a copy of the executable f (a process's /proc/PID/exe,
// which opens even after the file was replaced) in the data directory,
// named by its content, and returns its path. A restore maps these bytes
// again; the copy serves every sandbox that ran them.
func (d *Driver) keepExe(f *os.File) (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", err
	}
	id := exeID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim}
	d.exeMu.Lock()
	defer d.exeMu.Unlock()
	if p, ok := d.exes[id]; ok {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	in, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		return "", fmt.Errorf("keep executable: %w", err)
	}
	defer in.Close()
	// The restored processes open their executables again as the
	// sandbox's root, as they first did: the copies keep the originals'
	// modes, and the directory is traversable.
	dir := filepath.Join(d.cfg.DataDir, "exe")
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", fmt.Errorf("keep executable: %w", err)
	}
	if err := d.traversable(dir); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".exe-*")
	if err != nil {
		return "", fmt.Errorf("keep executable: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), in); err != nil {
		tmp.Close()
		return "", fmt.Errorf("keep executable: %w", err)
	}
	// CRIU checks that the file has the mode the process's had.
	mode := os.FileMode(st.Mode & 0o777)
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return "", fmt.Errorf("keep executable: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("keep executable: %w", err)
	}
	p := filepath.Join(dir, fmt.Sprintf("%x-%o", h.Sum(nil), mode))
	if _, err := os.Stat(p); err != nil {
		if err := os.Rename(tmp.Name(), p); err != nil {
			return "", fmt.Errorf("keep executable: %w", err)
		}
	}
	if d.exes == nil {
		d.exes = map[exeID]string{}
	}
	d.exes[id] = p
	return p, nil
}

// CheckCRIU says whether the driver can hibernate sandboxes on this host:
// nil, or why not (wrapping errdefs.ErrUnsupported). The answer is found
// once and kept.
func (d *Driver) CheckCRIU() error {
	_, err := d.criu()
	return err
}
