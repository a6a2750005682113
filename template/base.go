package template

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"time"

	"roost.dev/roost/errdefs"
)

// What base is made of.
const (
	baseSuite    = "bookworm"
	baseVariant  = "minbase"
	baseUser     = "user"
	baseUID      = "1000"
	baseHome     = "/home/user"
	baseHostname = "roost"
)

// basePackages go on top of minbase. passwd and login are required in
// bookworm already; they are named so useradd is there whatever minbase
// becomes. git is in E2B's base, and its SDKs' git helpers need it.
var basePackages = []string{
	"bash", "coreutils", "python3", "curl", "ca-certificates", "procps", "iproute2", "sudo",
	"passwd", "login", "git",
}

// baseRecipeVersion counts changes to how base is made other than its
// suite, variant and packages (configureBase, cleanBase): bump it with
// them, and every host rebuilds its base.
const baseRecipeVersion = 1

// baseRecipe is what a base is recorded as made from. A base recorded
// with another recipe (built by an older roost) is stale: EnsureBase
// builds a new one, which replaces it when complete.
func baseRecipe() string {
	return fmt.Sprintf("debootstrap %s %s v%d +%s", baseSuite, baseVariant, baseRecipeVersion, strings.Join(basePackages, ","))
}

// IsCurrentBase reports whether t is a base of the recipe this roost
// builds; EnsureBase replaces one that is not.
func IsCurrentBase(t Template) bool { return t.Recipe == baseRecipe() }

// baseEnv is the environment sandboxes of base start with.
var baseEnv = map[string]string{
	"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"LANG": "C.UTF-8",
}

const (
	// killWait bounds the wait for the output pipes after a build command
	// is killed.
	killWait = 5 * time.Second
	// logTail is how many lines of the build log a failure quotes.
	logTail = 25
)

// sharedBuild is a base build in progress in this process.
type sharedBuild struct {
	p    *progress
	done chan struct{} // closed when t and err are set
	t    Template
	err  error
}

// EnsureBase returns the "base" template, building it first if the store
// does not have it yet, or has one of an older recipe (about a minute
// with a nearby mirror; see doc.go for what it holds). A stale base stays
// usable until its successor is complete, and stays if the build fails.
// progress, if not nil, gets a line per build stage, e.g. "[base 3/7]
// retrieving packages"; debootstrap's full output goes to build.log
// beside the tree, and its tail is in the error when the build fails.
//
// Concurrent callers share one build, in this process and across
// processes sharing the store: a second caller waits, with the first
// caller's progress lines. ctx bounds the caller's wait; the build stops
// when the caller that runs it gives up, and a waiter whose ctx is still
// alive then takes over. Without debootstrap or root it fails with
// errdefs.ErrUnavailable and a reason.
func (s *Store) EnsureBase(ctx context.Context, progress io.Writer) (Template, error) {
	for {
		if t, done, err := s.currentBase(); done {
			return t, err
		}
		s.mu.Lock()
		b := s.building
		if b == nil {
			b = &sharedBuild{p: newProgress(BaseName), done: make(chan struct{})}
			s.building = b
			s.mu.Unlock()
			detach := b.p.attach(progress, "")
			t, err := s.leadBase(ctx, b.p)
			detach()
			s.mu.Lock()
			s.building = nil
			b.t, b.err = t, err
			close(b.done)
			s.mu.Unlock()
			return t, err
		}
		s.mu.Unlock()
		detach := b.p.attach(progress, "["+BaseName+"] waiting for the build in progress")
		select {
		case <-b.done:
			detach()
		case <-ctx.Done():
			detach()
			return Template{}, fmt.Errorf("wait for the base build: %w", context.Cause(ctx))
		}
		if b.err == nil {
			return b.t, nil
		}
		if !isContextErr(b.err) || ctx.Err() != nil {
			return Template{}, b.err
		}
		// The caller running the build gave up, not the build: take over.
	}
}

// currentBase reads base; done says there is nothing to build: base is
// current, or reading it failed with an error other than not found.
func (s *Store) currentBase() (t Template, done bool, err error) {
	t, err = s.read(BaseName)
	switch {
	case err == nil:
		return t, IsCurrentBase(t), nil
	case errors.Is(err, errdefs.ErrNotFound):
		return Template{}, false, nil
	default:
		return Template{}, true, err
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// leadBase builds base holding its lock, unless another process built it
// meanwhile.
func (s *Store) leadBase(ctx context.Context, p *progress) (Template, error) {
	unlock, err := s.lock(ctx, BaseName, func() {
		p.printf("[%s] waiting for another process building it", BaseName)
	})
	if err != nil {
		return Template{}, err
	}
	defer unlock()
	old, done, err := s.currentBase()
	if done {
		return old, err
	}
	start := time.Now()
	if old.Name != "" {
		p.printf("[%s] the cached base was made by an older roost: building the current one (%s)", BaseName, baseRecipe())
		s.log.Info("rebuilding stale base template", "recipe", old.Recipe, "want", baseRecipe())
	} else {
		s.log.Info("building base template")
	}
	t, err := s.replace(ctx, BaseName, func(ctx context.Context, build string) (Template, error) {
		t, err := s.buildBase(ctx, build, p)
		t.Recipe = baseRecipe()
		return t, err
	})
	if err != nil {
		return Template{}, err
	}
	took := time.Since(start).Round(time.Second)
	p.printf("[%s] ready in %s, %d MiB", BaseName, took, t.SizeBytes>>20)
	s.log.Info("base template built", "duration", took, "size_bytes", t.SizeBytes)
	return t, nil
}

// CanBuildBase says whether EnsureBase can build base on this host: it
// needs root, debootstrap and a reachable Debian mirror (it asks the
// mirror for the release index). The error wraps errdefs.ErrUnavailable
// and says what is missing.
func (s *Store) CanBuildBase(ctx context.Context) error {
	if _, err := buildPrereqs(); err != nil {
		return err
	}
	m, err := DebianMirror()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(m.URL, "http") {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	u := m.URL + "/dists/" + baseSuite + "/InRelease"
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return fmt.Errorf("debian mirror %s: %w", m.URL, unavailable(err))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("debian mirror %s unreachable: %w", m.URL, unavailable(err))
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("debian mirror %s: %s: %s: %w", m.URL, u, resp.Status, errdefs.ErrUnavailable)
	}
	return nil
}

// buildPrereqs checks for root and debootstrap and returns debootstrap's
// path.
func buildPrereqs() (string, error) {
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("building the base template needs root: %w", errdefs.ErrUnavailable)
	}
	if p, err := exec.LookPath("debootstrap"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/debootstrap", "/sbin/debootstrap"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("debootstrap not found: install it (apt-get install debootstrap): %w", errdefs.ErrUnavailable)
}

// debootstrapBase fills build/rootfs with base.
func (s *Store) debootstrapBase(ctx context.Context, build string, p *progress) (Template, error) {
	debootstrap, err := buildPrereqs()
	if err != nil {
		return Template{}, err
	}
	mirror, err := DebianMirror()
	if err != nil {
		return Template{}, err
	}
	rootfs := filepath.Join(build, rootfsDir)
	logPath := filepath.Join(build, logFile)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return Template{}, fmt.Errorf("create build log: %w", err)
	}
	defer logf.Close()
	s.log.Info("running debootstrap", "mirror", mirror.URL, "from", mirror.From, "log", logPath)
	p.enter(stageRelease)

	args := []string{
		"--variant=" + baseVariant,
		"--include=" + strings.Join(basePackages, ","),
		"--components=main",
	}
	// gpgv reads binary keyrings; for an armored one (or none), debootstrap
	// uses its default, the Debian archive keyring.
	if strings.HasSuffix(mirror.Keyring, ".gpg") {
		if _, err := os.Stat(mirror.Keyring); err == nil {
			args = append(args, "--keyring="+mirror.Keyring)
		}
	}
	args = append(args, baseSuite, rootfs, mirror.URL)
	fmt.Fprintf(logf, "# %s %s\n", debootstrap, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, debootstrap, args...)
	out := &lineWriter{out: logf, fn: p.debootstrapLine}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = buildEnv()
	cmd.SysProcAttr = isolatedBuild()
	cmd.WaitDelay = killWait
	if err := runLocked(cmd); err != nil {
		if ctx.Err() != nil {
			return Template{}, fmt.Errorf("debootstrap: %w", context.Cause(ctx))
		}
		return Template{}, fmt.Errorf("debootstrap: %w (log %s)\n%s", err, logPath, tailFile(logPath, logTail))
	}

	p.enter(stageConfigure)
	if err := configureBase(ctx, rootfs, logf); err != nil {
		return Template{}, fmt.Errorf("configure base: %w (log %s)\n%s", err, logPath, tailFile(logPath, logTail))
	}
	p.enter(stageCleanup)
	if err := cleanBase(rootfs); err != nil {
		return Template{}, fmt.Errorf("clean base: %w", err)
	}
	env := make(map[string]string, len(baseEnv))
	for k, v := range baseEnv {
		env[k] = v
	}
	return Template{Source: SourceDebootstrap, DefaultUser: baseUser, Workdir: baseHome, Env: env}, nil
}

// isolatedBuild runs a build command as the init of its own pid
// namespace, in its own mount namespace, killed if its parent dies: when
// it ends, for whatever reason (a cancel kills it), the kernel kills
// everything it started (dpkg and friends), and the /proc and /sys it
// mounts in the target vanish with the namespace. Nothing of a build
// outlives the agent, so the next build can remove the leftover safely.
func isolatedBuild() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags:   syscall.CLONE_NEWPID,
		Unshareflags: syscall.CLONE_NEWNS, // Go makes / private in it
		Pdeathsig:    syscall.SIGKILL,
	}
}

// runLocked runs cmd from a goroutine locked to its OS thread until cmd
// ends: Pdeathsig fires when the thread that started a process exits, and
// a thread of the Go runtime can exit under us if another goroutine
// locks it and ends (as namespace code does).
func runLocked(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		defer goruntime.UnlockOSThread()
		done <- cmd.Run()
	}()
	return <-done
}

// buildEnv is the environment of debootstrap and the commands run in the
// new tree: a clean one, plus the host's proxy settings.
func buildEnv() []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"LC_ALL=C",
		"DEBIAN_FRONTEND=noninteractive",
	}
	for _, k := range []string{"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// configureBase adds the default user with passwordless sudo and writes
// the placeholders runtimes replace.
func configureBase(ctx context.Context, rootfs string, log io.Writer) error {
	steps := [][]string{
		{"/usr/sbin/groupadd", "--gid", baseUID, baseUser},
		{"/usr/sbin/useradd", "--uid", baseUID, "--gid", baseUID, "--create-home", "--home-dir", baseHome, "--shell", "/bin/bash", baseUser},
	}
	for _, argv := range steps {
		if err := inTree(ctx, rootfs, log, argv...); err != nil {
			return err
		}
	}
	sudoers := filepath.Join(rootfs, "etc/sudoers.d", baseUser)
	if err := os.WriteFile(sudoers, []byte(baseUser+" ALL=(ALL:ALL) NOPASSWD: ALL\n"), 0o440); err != nil {
		return err
	}
	if err := os.Chmod(sudoers, 0o440); err != nil { // whatever the umask
		return err
	}
	if err := inTree(ctx, rootfs, log, "/usr/sbin/visudo", "--check", "--file", "/etc/sudoers.d/"+baseUser); err != nil {
		return err
	}
	// debootstrap copies the host's hostname and resolv.conf: replace them
	// with placeholders (plain files; runtimes overwrite them).
	files := []struct{ path, data string }{
		{"etc/hostname", baseHostname + "\n"},
		{"etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\t" + baseHostname + "\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"},
		{"etc/resolv.conf", "# Written by the sandbox runtime when a sandbox starts.\n"},
	}
	for _, f := range files {
		path := filepath.Join(rootfs, f.path)
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.WriteFile(path, []byte(f.data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// inTree runs argv chrooted into rootfs, its output going to log.
func inTree(ctx context.Context, rootfs string, log io.Writer, argv ...string) error {
	fmt.Fprintf(log, "# chroot %s\n", strings.Join(argv, " "))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = buildEnv()
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = isolatedBuild()
	cmd.SysProcAttr.Chroot = rootfs
	cmd.WaitDelay = killWait
	if err := runLocked(cmd); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(argv[0]), err)
	}
	return nil
}

// cleanBase removes apt's caches and package lists (apt-get update
// fetches fresh lists in a sandbox) and the logs of the build.
func cleanBase(rootfs string) error {
	for _, pattern := range []string{
		"var/cache/apt/archives/*.deb",
		"var/cache/apt/archives/partial/*",
		"var/cache/apt/*.bin",
		"var/lib/apt/lists/*",
		"var/cache/debconf/*-old",
		"var/lib/dpkg/*-old",
	} {
		matches, err := filepath.Glob(filepath.Join(rootfs, pattern))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if fi, err := os.Lstat(m); err == nil && fi.IsDir() {
				continue // lists/partial and the like stay, empty
			}
			if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// tailFile returns the last n lines of the file at path.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const window = 16 * 1024
	if st, err := f.Stat(); err == nil && st.Size() > window {
		_, _ = f.Seek(st.Size()-window, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	b = bytes.TrimRight(b, "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
