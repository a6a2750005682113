package sandboxinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"syscall"
	"time"
)

// Main runs the mode ModeEnv selects and exits.
func Main() {
	switch mode := os.Getenv(ModeEnv); mode {
	case ModeHold:
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	case ModeInit:
		runInit()
	case ModeResume:
		runResumed()
	default:
		fmt.Fprintf(os.Stderr, "roost-init: the namespace driver's sandbox init; not meant to be run by hand (%s=%q)\n", ModeEnv, mode)
		os.Exit(2)
	}
}

func runInit() {
	// Namespaces unshared here (the cgroup namespace) belong to this OS
	// thread only: everything from here on, envd's start and restarts
	// included, runs on it, so that envd is born inside them. (Another
	// thread of the Go runtime forking envd left it in the host's cgroup
	// namespace now and then.)
	runtime.LockOSThread()
	status := os.NewFile(FDStatus, "status")
	if err := becomeRoot(); err != nil {
		fmt.Fprintf(status, "error: %v\n", err)
		os.Exit(1)
	}
	cfg, err := setupSandbox()
	if err != nil {
		fmt.Fprintf(status, "error: %v\n", err)
		os.Exit(1)
	}
	if err := confine(cfg); err != nil {
		fmt.Fprintf(status, "error: %v\n", err)
		os.Exit(1)
	}
	ln := -1
	if cfg.EnvdPort != 0 {
		if ln, err = listenTCP(cfg.EnvdPort); err != nil {
			fmt.Fprintf(status, "error: %v\n", err)
			os.Exit(1)
		}
	}
	envd, err := startEnvd(cfg, ln)
	if err != nil {
		fmt.Fprintf(status, "error: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintln(status, "ok")
	status.Close()
	superviseForever(cfg, envd, ln)
}

// setupSandbox builds the sandbox's filesystem view and pivots into it.
func setupSandbox() (Config, error) {
	var cfg Config
	for _, fd := range []int{FDConfig, FDStatus, FDEnvd, FDSelf} {
		syscall.CloseOnExec(fd)
	}
	procfd, err := offerProc()
	if err != nil {
		return cfg, err
	}
	// Blocks until the driver has attached the procfs below the
	// sandbox's root. (The init was born in the sandbox's cgroup.)
	if err := json.NewDecoder(os.NewFile(FDConfig, "config")).Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	syscall.Close(procfd)
	// In the sandbox's cgroup: make it the root of our cgroup view.
	own, err := ownHierarchies()
	if err != nil {
		return cfg, err
	}
	if err := syscall.Unshare(syscall.CLONE_NEWCGROUP); err != nil {
		return cfg, fmt.Errorf("unshare cgroup namespace: %w", err)
	}
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return cfg, fmt.Errorf("make mounts private: %w", err)
	}
	syscall.Close(FDSelf)
	// The path where the driver attached the sandbox's tree in the
	// namespace this one is a copy of, not a descriptor from the driver: a
	// descriptor would point into another mount namespace, where this
	// process may not mount.
	root := cfg.RootFS
	// The overlay came from the host's namespace and is locked here;
	// pivot_root needs a mount of our own, so bind the root onto itself.
	// The bind takes along, still locked, what the driver mounted below
	// the root from the host's namespace: /proc, /sys and their masks.
	if err := syscall.Mount(root, root, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return cfg, fmt.Errorf("bind sandbox root: %w", err)
	}
	if err := mountSpecial(root); err != nil {
		return cfg, err
	}
	if err := mountCgroups(root, own, cfg.CgroupMounts); err != nil {
		return cfg, err
	}
	if err := writeIdentityFiles(root, cfg); err != nil {
		return cfg, err
	}
	if err := syscall.Sethostname([]byte(cfg.Hostname)); err != nil {
		return cfg, fmt.Errorf("set hostname: %w", err)
	}
	if err := pivot(root); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func mountSpecial(root string) error {
	type m struct {
		source, target, fstype string
		flags                  uintptr
		data                   string
	}
	const nsd = syscall.MS_NOSUID | syscall.MS_NODEV
	// /proc and /sys the driver mounted (see StatusProc). Under /dev, the
	// template's own device nodes stay unusable: the root is nodev.
	if err := mountAt(root, "tmpfs", "dev", "tmpfs", syscall.MS_NOSUID|syscall.MS_STRICTATIME, "mode=755,size=65536k"); err != nil {
		return err
	}
	// Device nodes cannot be made in a user namespace; bind the host's.
	for _, dev := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		target := filepath.Join(root, "dev", dev)
		if err := os.WriteFile(target, nil, 0o666); err != nil {
			return fmt.Errorf("create /dev/%s: %w", dev, err)
		}
		if err := syscall.Mount("/dev/"+dev, target, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", dev, err)
		}
	}
	for _, dir := range []string{"pts", "shm", "mqueue"} {
		if err := os.Mkdir(filepath.Join(root, "dev", dir), 0o755); err != nil {
			return err
		}
	}
	more := []m{
		{"devpts", "dev/pts", "devpts", syscall.MS_NOSUID | syscall.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{"shm", "dev/shm", "tmpfs", nsd, "mode=1777,size=65536k"},
		{"mqueue", "dev/mqueue", "mqueue", nsd | syscall.MS_NOEXEC, ""},
	}
	for _, s := range more {
		if err := mountAt(root, s.source, s.target, s.fstype, s.flags, s.data); err != nil {
			return err
		}
	}
	links := map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "core": "/proc/kcore"}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, "dev", name)); err != nil {
			return err
		}
	}
	for _, dir := range []string{"tmp", "var/tmp"} {
		p := filepath.Join(root, dir)
		if err := os.MkdirAll(p, 0o1777); err != nil {
			return err
		}
		if err := os.Chmod(p, 0o1777|os.ModeSticky); err != nil {
			return err
		}
	}
	return nil
}

func mountAt(root, source, target, fstype string, flags uintptr, data string) error {
	p := filepath.Join(root, target)
	if err := os.MkdirAll(p, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(source, p, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on /%s: %w", fstype, target, err)
	}
	return nil
}

// writeIdentityFiles gives the sandbox its hostname, hosts and resolver.
// They land in the sandbox's own upper layer.
func writeIdentityFiles(root string, cfg Config) error {
	files := map[string]string{
		"etc/hostname":    cfg.Hostname + "\n",
		"etc/hosts":       "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + cfg.Hostname + "\n",
		"etc/resolv.conf": cfg.Resolv,
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		_ = os.Remove(p) // it may be a symlink (e.g. to systemd-resolved's file)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return fmt.Errorf("write /%s: %w", name, err)
		}
	}
	return nil
}

// pivot makes the current directory the filesystem root and drops the
// host's from view.
func pivot(root string) error {
	if err := syscall.Chdir(root); err != nil {
		return err
	}
	// pivot_root(".", ".") stacks the old root on top of the new one;
	// detaching "." then leaves only the new root.
	if err := syscall.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := syscall.Unmount(".", syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return syscall.Chdir("/")
}

// envdPath runs the envd binary the driver opened for us; it exists on the
// host, never in the sandbox's tree. The forked child executes its own copy
// of the descriptor: the init is not dumpable (confine), so no other
// process may open /proc/1/fd/.
const envdPath = "/proc/self/fd/5" // FDEnvd

// listenTCP opens a listening socket on port of every IPv4 address.
func listenTCP(port int) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("envd socket: %w", err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("envd socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port}); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("bind envd port %d: %w", port, err)
	}
	if err := syscall.Listen(fd, 4096); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("listen on envd port %d: %w", port, err)
	}
	return fd, nil
}

// startEnvd starts envd; ln, unless -1, is its listening socket, which
// it gets as fd 3.
func startEnvd(cfg Config, ln int) (int, error) {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "USER=root"}
	keys := make([]string, 0, len(cfg.Env))
	for k := range cfg.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+cfg.Env[k])
	}
	args := append([]string{"envd"}, cfg.EnvdArgs...)
	var extra []uintptr
	if ln >= 0 {
		args = append(args, "-listen-fd", strconv.Itoa(3+len(extra)))
		extra = append(extra, uintptr(ln))
	}
	pid, err := spawn(envdPath, args, env, extra)
	if err != nil {
		return 0, fmt.Errorf("start envd: %w", err)
	}
	return pid, nil
}

// beforeFork runs between opening the child's stdin and forking; a test
// collects garbage there.
var beforeFork = func() {}

// spawn starts path in a new session, in /, with /dev/null as stdin, this
// process's stderr as stdout and stderr, and extra as fds 3 and up.
func spawn(path string, args, env []string, extra []uintptr) (int, error) {
	stdin := uintptr(0) // without /dev/null, ours
	null, err := os.Open("/dev/null")
	if err == nil {
		// null stays referenced until ForkExec returned (the deferred Close):
		// an unreferenced *os.File may be closed by its finalizer first,
		// leaving the child a closed or reused descriptor.
		defer null.Close()
		stdin = null.Fd()
	}
	beforeFork()
	return syscall.ForkExec(path, args, &syscall.ProcAttr{
		Dir:   "/",
		Env:   env,
		Files: append([]uintptr{stdin, 2, 2}, extra...),
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
}

// superviseForever reaps every process that ends in the sandbox and
// restarts envd when it dies. On SIGTERM it takes the sandbox down.
func superviseForever(cfg Config, envd, ln int) {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	go func() {
		<-term
		_ = syscall.Kill(-1, syscall.SIGKILL)
		os.Exit(0)
	}()
	// Reaping runs on a thread of its own; restarting envd and executing
	// the init again stay on this one, the thread runInit locked, whose
	// bounding set and namespaces are the sandbox's.
	reexec := make(chan os.Signal, 1)
	signal.Notify(reexec, syscall.Signal(SignalReexec))
	ended := make(chan endedChild)
	go reapForever(ended)
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-reexec:
			err := execSelf(cfg, envd, ln)
			fmt.Fprintf(os.Stderr, "roost init: re-exec: %v\n", err)
		case c := <-ended:
			if c.pid != envd {
				continue
			}
			fmt.Fprintf(os.Stderr, "roost init: envd exited (%s); restarting\n", describe(c.ws))
			time.Sleep(backoff)
			backoff = min(backoff*2, 5*time.Second)
			if next, err := startEnvd(cfg, ln); err == nil {
				envd = next
			} else {
				fmt.Fprintf(os.Stderr, "roost init: %v\n", err)
			}
		}
	}
}

// endedChild is a child the init reaped.
type endedChild struct {
	pid int
	ws  syscall.WaitStatus
}

// reapForever reaps every process that ends in the sandbox and reports
// each on ended.
func reapForever(ended chan<- endedChild) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			time.Sleep(100 * time.Millisecond) // ECHILD: none yet
			continue
		}
		ended <- endedChild{pid, ws}
	}
}

func describe(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}

// resumeState is what the init carries across executing itself again.
type resumeState struct {
	Config Config `json:"config"`
	Envd   int    `json:"envd"`
	Listen int    `json:"listen"`
}

// execSelf executes the init's own binary again (see SignalReexec) with
// its state, keeping envd's binary and listening socket open. It returns
// only on failure.
func execSelf(cfg Config, envd, ln int) error {
	cfg.Seccomp = nil // installed already; the filter stays across exec
	b, err := json.Marshal(resumeState{Config: cfg, Envd: envd, Listen: ln})
	if err != nil {
		return err
	}
	for _, fd := range []int{FDEnvd, ln} {
		if fd < 0 {
			continue
		}
		if _, err := fcntl(fd, syscall.F_SETFD, 0); err != nil {
			return err
		}
	}
	env := []string{ModeEnv + "=" + ModeResume, ResumeEnv + "=" + string(b), "GOMAXPROCS=1", "GODEBUG=containermaxprocs=0,updatemaxprocs=0"}
	args := append([]string{}, os.Args[:min(len(os.Args), 2)]...)
	return syscall.Exec("/proc/self/exe", append(args, ResumedArg), env)
}

func fcntl(fd, cmd, arg int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), uintptr(cmd), uintptr(arg))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// runResumed is the init after execSelf: undumpable again first, then
// supervising as before.
func runResumed() {
	runtime.LockOSThread()
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0); e != 0 {
		fmt.Fprintf(os.Stderr, "roost init: make the init undumpable: %v\n", e)
		os.Exit(1)
	}
	var st resumeState
	if err := json.Unmarshal([]byte(os.Getenv(ResumeEnv)), &st); err != nil {
		fmt.Fprintf(os.Stderr, "roost init: resume: %v\n", err)
		os.Exit(1)
	}
	os.Unsetenv(ResumeEnv)
	for _, fd := range []int{FDEnvd, st.Listen} {
		if fd >= 0 {
			syscall.CloseOnExec(fd)
		}
	}
	superviseForever(st.Config, st.Envd, st.Listen)
}
